"""The dask engine's finished lanes: each lane's result fetched on the client's event
loop, then reported to the scheduler from one thread of this engine, in the order they
arrive (see :meth:`Results.on_done` for why not on Dask's callback thread)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any, Protocol

from ..._errors import SerializationError, WorkerCrashed
from ..._signals import block_in_this_thread
from ...transport.failure import Failure
from ..contract import ChunkReport, EngineEvents, WorkerSetup, initializer_failed
from .cluster import Cluster, distributed_module
from .worker import _SetupFailed

__all__ = ["Results"]

log = logging.getLogger("corework.dask")


class Host(Protocol):
    """What the results thread asks of its engine (``DaskEngine``)."""

    setup: WorkerSetup

    def finish_lane(self, slot: int, future: Any) -> bool: ...

    def lost(self, slot: int, error: BaseException) -> None: ...


class Results:
    """The results thread of one engine and what it is handed (see the module docstring)."""

    def __init__(self, engine: Host, cluster: Cluster) -> None:
        self._engine = engine
        self._cluster = cluster
        #: Finished lanes, as (slot, chunk id, future, outcome, error); None ends it.
        self._results: queue.SimpleQueue[tuple[int, int, Any, Any, BaseException | None]
                                         | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="corework-dask-results",
                                        daemon=True)
        self._firsts: dict[int, int] = {}  # chunk id -> its first task's index (see expect)

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._thread.start()

    def end(self) -> None:
        """Report what is queued, then end the thread (waiting for it, unless on it)."""
        self._results.put(None)
        if self._thread.is_alive() and not self.is_current_thread():
            self._thread.join()

    def is_current_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def expect(self, chunk_id: int, first: int) -> None:
        """A lane runs chunk ``chunk_id`` now, whose first task has index ``first`` in
        its submission (so its log records name their tasks)."""
        self._firsts[chunk_id] = first

    def on_done(self, slot: int, chunk_id: int, future: Any) -> None:
        """A lane's future finished (on Dask's callback thread, which must not wait).

        A result still has to be fetched from the worker that holds it, and that can
        take long: from a worker that has just died, the Dask scheduler keeps trying to
        connect for ``distributed.comm.timeouts.connect`` (30 s). Fetched here, on Dask's
        one callback thread, it held up every other lane's report meanwhile, so every
        task in flight timed out. So results are fetched on the client's event loop,
        side by side, and reported from this engine's results thread, in the order they
        arrive."""
        if future.status != "finished":
            self._results.put((slot, chunk_id, future, None, None))
            return
        try:
            self._cluster.client.loop.add_callback(self._fetch, slot, chunk_id, future)
        except Exception as exc:  # the client is closing
            self._results.put((slot, chunk_id, future, None, exc))

    async def _fetch(self, slot: int, chunk_id: int, future: Any) -> None:
        """On the client's event loop: fetch a lane's result, then queue its report."""
        try:
            outcome = await self._cluster.client.gather(future, asynchronous=True)
        except BaseException as exc:  # cancelled (stopped), lost, or not unpicklable here
            self._results.put((slot, chunk_id, future, None, exc))
        else:
            self._results.put((slot, chunk_id, future, outcome, None))

    def _run(self) -> None:
        """The results thread: report each finished lane's chunk, until ``None``."""
        block_in_this_thread()  # Ctrl-C is the main thread's (see corework._signals)
        while (item := self._results.get()) is not None:
            slot, chunk_id, future, outcome, error = item
            first = self._firsts.pop(chunk_id, None)
            if not self._engine.finish_lane(slot, future):
                continue  # killed, or the pool stopped: already accounted for
            try:
                self._report(slot, (chunk_id, first), future, outcome, error)
            except BaseException as exc:  # this thread must live on: report, and go on
                log.exception("corework could not report a Dask result")
                with contextlib.suppress(BaseException):
                    self._events.chunk_done(slot, _failed(chunk_id, exc))

    def _report(self, slot: int, chunk: tuple[int, int | None], future: Any, outcome: Any,
                error: BaseException | None) -> None:
        chunk_id = chunk[0]
        if future.status == "error":
            self._on_error(slot, chunk_id, future.exception())
        elif future.status == "cancelled":  # not by us: the scheduler forgot it
            self._engine.lost(slot, WorkerCrashed(
                "the Dask scheduler dropped the task (was it restarted, or the connection "
                "to it lost?)"))
        elif error is not None:  # e.g. a result whose class cannot be imported here
            self._events.chunk_done(slot, _failed(chunk_id, SerializationError(
                f"a result from a Dask worker cannot be unpickled here: {error}",
                stage="unpickle-result", original=error)))
        else:
            self._on_finished(slot, chunk, outcome)

    def _on_finished(self, slot: int, chunk: tuple[int, int | None], outcome: Any) -> None:
        chunk_id, first = chunk
        if isinstance(outcome, _SetupFailed):
            self._events.engine_broken(initializer_failed(
                self._engine.setup, "in a Dask worker", outcome.failure))
            return
        if isinstance(outcome, ChunkReport):  # none of its tasks could run
            outcome.remote = True
            self._events.chunk_done(slot, outcome)
            return
        try:
            report = outcome.report()
        except Exception as exc:  # e.g. a result whose class cannot be imported here
            error = SerializationError(f"a result from a Dask worker cannot be unpickled "
                                       f"here: {exc}", stage="unpickle-result", original=exc)
            report = _failed(chunk_id, error)
        if outcome.logs:  # before the chunk ends: each record names its task
            from ..log_relay import relay

            for position, fields in outcome.logs:
                relay(fields, slot, first, position)
        self._events.chunk_done(slot, report)

    def _on_error(self, slot: int, chunk_id: int, exc: BaseException) -> None:
        killed = getattr(distributed_module(), "KilledWorker", ())
        if isinstance(exc, killed):
            self._engine.lost(slot, WorkerCrashed(
                f"the task's Dask worker died each time it ran it ({exc}); Dask gave up "
                "after distributed.scheduler.allowed-failures tries"))
            return
        self._events.chunk_done(slot, _failed(chunk_id, exc))  # e.g. unpicklable here


def _failed(chunk_id: int, exc: BaseException) -> ChunkReport:
    """A chunk none of whose tasks could run (so the scheduler splits it, or fails it)."""
    return ChunkReport(chunk_id, [], {}, 0.0, Failure.capture(exc), True)
