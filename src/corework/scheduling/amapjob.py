"""A map whose results are awaited in an asyncio event loop, never waited for in a thread.

The scheduler's threads finish chunks as they always do; each finish also wakes the loop
(``loop.call_soon_threadsafe``), where the consumer takes what is ready. No thread is
blocked per item, or per map: the loop keeps serving its other coroutines meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from ..engines import CallKind, ChunkReport
from .chunk import Chunk
from .mapjob import Errors, MapJob
from .policy import TaskPolicy
from .scheduler import Scheduler


class AsyncMapJob(MapJob):
    """A :class:`MapJob` read with ``async for`` (see :meth:`achunks`)."""

    def __init__(self, scheduler: Scheduler, fn: Callable[..., Any], iterable: Iterable[Any],
                 *, loop: asyncio.AbstractEventLoop, kind: CallKind = CallKind.ARG,
                 chunksize: int | None = None, ordered: bool = True,
                 policy: TaskPolicy | None = None, errors: Errors = "raise") -> None:
        super().__init__(scheduler, fn, iterable, kind=kind, chunksize=chunksize,
                         ordered=ordered, policy=policy, errors=errors)
        self._loop = loop
        self._wake = asyncio.Event()

    async def achunks(self) -> AsyncGenerator[list[Any], None]:
        """As :meth:`MapJob.chunks`, awaited. Left early (``aclose()``, a cancelled task,
        a failure), the chunks not started are dropped; :meth:`kill_running` is the
        caller's to call if it wants the running ones stopped too."""
        try:
            while True:
                self.fill()
                if not self._out:
                    return
                chunk, outcome = await self._next_finished()
                values, error = self._values(chunk, outcome)
                del chunk, outcome
                if values:
                    yield values
                if error is not None:
                    raise self._scheduler.translate(error)
        finally:
            self.cancel()

    async def _next_finished(self) -> tuple[Chunk, ChunkReport | BaseException]:
        while True:
            with self._changed:
                self._wake.clear()  # under the lock: a finish after this wakes us again
                ready = self._take_ready()
            if ready is not None:
                return ready
            await self._wake.wait()

    def kill_running(self) -> None:
        """Stop this map's chunks that run now (their workers are killed and replaced),
        and drop those still queued or waiting for a retry."""
        self.cancel()
        while self._scheduler.kill_task(self):
            pass

    def _finish(self, chunk: Chunk, outcome: ChunkReport | BaseException) -> None:
        super()._finish(chunk, outcome)
        # A closed loop (RuntimeError): nobody is awaiting these results any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)


async def async_chunks(scheduler: Scheduler, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
                  policy: TaskPolicy, ordered: bool, chunksize: int | None, errors: Errors,
                  kill_on_cancel: bool) -> AsyncGenerator[list[Any], None]:
    """The map's results a chunk at a time; left early, its work not started is dropped
    and, with ``kill_on_cancel``, its running tasks are killed."""
    job = AsyncMapJob(scheduler, fn, iterable, loop=asyncio.get_running_loop(),
                      chunksize=chunksize, ordered=ordered, policy=policy,
                      errors=errors)
    chunks = job.achunks()
    finished = False
    try:
        async for values in chunks:
            yield values
        finished = True
    finally:
        await chunks.aclose()
        if not finished and kill_on_cancel:
            job.kill_running()


async def flatten(chunks: AsyncGenerator[list[Any], None]) -> AsyncGenerator[Any, None]:
    try:
        async for values in chunks:
            for value in values:
                yield value
    finally:
        await chunks.aclose()
