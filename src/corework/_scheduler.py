"""The scheduler: which chunk runs on which slot, and where its results go.

::

    submit()  ─▶ Chunk(1 task) ──┐                     ┌──▶ slot 0 ─┐
    MapJob    ─▶ Chunk(n tasks) ─┼─▶ pending (FIFO) ───┼──▶ slot 1 ─┼─▶ engine events
      (fed lazily from the       │   dispatched to     └──▶ slot … ─┘      │
       caller's thread)          │   idle slots                            ▼
                                 └──────────── sink.deliver / sink.fail ◀─ chunk_done,
                                               (a Future, or a MapJob)     worker_lost

The scheduler is engine-agnostic: it talks to an :class:`~corework.engines.Engine`
through ``prepare / pack / send / kill / stop`` and hears back through the
:class:`~corework.engines.EngineEvents` methods below. It always knows which chunk each
slot is running (``_running``), which is what timeouts, cancellation of running tasks and
crash recovery build on. Results are handed to sinks outside the lock, so a future's
done-callbacks may submit more work.
"""

from __future__ import annotations

import copy
import itertools
import threading
import types
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from ._errors import Cancelled, PoolClosed, describe_task, short_repr
from ._outcomes import task_exception
from ._transport import CallKind
from .engines import ChunkReport, ChunkWork, Engine, FunctionRef

#: Task functions whose serialized form a pool keeps, so repeated ``submit(fn, ...)``
#: pickles ``fn`` once (and each worker receives it once).
FUNCTION_CACHE_SIZE = 64


class ChunkSink(Protocol):
    """Where a chunk's outcome goes: a single task's Future, or a map's collector."""

    def claim(self, chunk: Chunk) -> bool:
        """About to run: False if it was cancelled meanwhile (then it is dropped)."""

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        """The chunk ran; some of its tasks may have failed."""

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        """None of the chunk's tasks can have a result (worker lost, pool broken)."""


@dataclass(eq=False)
class Chunk:
    """Consecutive tasks of one job, run together on one slot."""

    work: ChunkWork
    first: int  # the job's index of the chunk's first task
    sink: ChunkSink

    def describe(self, position: int) -> str:
        """Name the task at ``position`` in this chunk, for error messages."""
        items = self.work.items
        if self.work.kind is CallKind.CALL:
            return f"the call {_describe_call(self.work.fn.fn, items[position])}"
        return describe_task(self.first + position, items[position], has_item=True)

    def blame(self, error: BaseException) -> BaseException:
        """A copy of ``error`` (shared by several chunks) with a note naming these tasks."""
        count = len(self.work.items)
        where = (self.describe(0) if count == 1 else
                 f"tasks {self.first}-{self.first + count - 1} (run together as one chunk)")
        blamed = copy.copy(error)
        notes = [*getattr(error, "__notes__", []), f"while running {where}"]
        blamed.__notes__ = notes  # type: ignore[attr-defined]  # a new list, not the shared one
        return blamed


class Scheduler:
    """Dispatches chunks to an engine's slots; implements ``EngineEvents``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)  # notified when nothing is left to do
        self._pending: deque[Chunk] = deque()
        self._idle: list[int] = []
        self._running: dict[int, Chunk] = {}
        self._ids = itertools.count()
        self._functions: OrderedDict[Any, FunctionRef] = OrderedDict()
        self._closed = False
        self._stop_when_quiet = False
        self._stopped = False
        self._broken: BaseException | None = None
        engine.start(self)

    # ------------------------------------------------------------------ preparing work

    def function(self, fn: Callable[..., Any], *, reuse: bool = False) -> FunctionRef:
        """Prepare ``fn`` for the engine; with ``reuse``, plain functions are cached."""
        if not callable(fn):
            raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
        cacheable = reuse and isinstance(fn, (types.FunctionType, types.BuiltinFunctionType))
        if cacheable:
            with self._lock:
                cached = self._functions.get(fn)
                if cached is not None:
                    self._functions.move_to_end(fn)
                    return cached
        ref = self.engine.prepare(fn, next(self._ids))
        if cacheable:
            with self._lock:
                self._functions[fn] = ref
                while len(self._functions) > FUNCTION_CACHE_SIZE:
                    self.engine.forget(self._functions.popitem(last=False)[1])
        return ref

    def make_chunk(self, fn: FunctionRef, kind: CallKind, items: Sequence[Any], first: int,
                   sink: ChunkSink) -> Chunk:
        """A chunk with its arguments packed (raises SerializationError naming the task)."""
        chunk = Chunk(ChunkWork(next(self._ids), fn, kind, items), first, sink)
        chunk.work.payload = self.engine.pack(items, chunk.describe)
        return chunk

    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` as one task; its outcome lands in the Future."""
        self.check_open()
        future: Future[Any] = Future()
        ref = self.function(fn, reuse=True)
        self.enqueue(self.make_chunk(ref, CallKind.CALL, [(args, kwargs)], 0,
                                     _FutureSink(future)))
        return future

    # ------------------------------------------------------------------ dispatching

    def check_open(self) -> None:
        """Raise if no new work may be submitted."""
        if self._broken is not None:
            error = copy.copy(self._broken)  # a fresh traceback each time it is raised
            raise error.with_traceback(None) from self._broken.__cause__
        if self._closed:
            raise PoolClosed("cannot submit work after the pool was shut down")

    def enqueue(self, chunk: Chunk) -> None:
        """Queue a chunk; it starts at once if a slot is idle."""
        with self._lock:
            self.check_open()
            self._pending.append(chunk)
            slot, chunk_to_send = self._assign_idle()
        if chunk_to_send is not None:
            self.engine.send(slot, chunk_to_send.work)

    def _assign_idle(self) -> tuple[int, Chunk | None]:
        """With the lock held: give the next pending chunk to an idle slot, if both exist."""
        if not self._idle:
            return -1, None
        chunk = self._take_pending()
        if chunk is None:
            return -1, None
        slot = self._idle.pop()
        self._running[slot] = chunk
        return slot, chunk

    def _take_pending(self) -> Chunk | None:
        """With the lock held: the next pending chunk whose owner still wants it."""
        while self._pending:
            chunk = self._pending.popleft()
            if chunk.sink.claim(chunk):
                return chunk
        return None

    def _next_for(self, slot: int) -> Chunk | None:
        """With the lock held: the slot is free; give it work or mark it idle."""
        chunk = self._take_pending()
        if chunk is None:
            self._idle.append(slot)
            self._notify_if_quiet()
        else:
            self._running[slot] = chunk
        return chunk

    def _notify_if_quiet(self) -> None:
        if not self._pending and not self._running:
            self._quiet.notify_all()
            if self._stop_when_quiet:
                self._stop_engine(wait=False)

    # ------------------------------------------------------------------ engine events

    def worker_ready(self, slot: int) -> None:
        with self._lock:
            chunk = self._next_for(slot)
        if chunk is not None:
            self.engine.send(slot, chunk.work)

    def chunk_done(self, slot: int, report: ChunkReport) -> None:
        with self._lock:
            done = self._running.get(slot)
            if done is None or done.work.id != report.chunk_id:
                return  # a late report from a worker whose task was already written off
            del self._running[slot]
            chunk = self._next_for(slot)
        if chunk is not None:
            self.engine.send(slot, chunk.work)
        done.sink.deliver(done, report)

    def worker_lost(self, slot: int, error: BaseException) -> None:
        with self._lock:
            lost = self._running.pop(slot, None)
            self._notify_if_quiet()
        if lost is not None:
            lost.sink.fail(lost, error)

    def engine_broken(self, error: BaseException) -> None:
        with self._lock:
            if self._broken is not None:
                return
            self._broken = error
            orphans = [*self._pending, *self._running.values()]
            self._pending.clear()
            self._running.clear()
            self._quiet.notify_all()
            self._stop_engine(wait=False)  # its workers can run nothing more
        for chunk in orphans:
            chunk.sink.fail(chunk, error)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Take no more work; optionally drop what has not started; stop the engine."""
        with self._lock:
            self._closed = True
            dropped = list(self._pending) if cancel_futures else []
            if cancel_futures:
                self._pending.clear()
        for chunk in dropped:
            chunk.sink.fail(chunk, Cancelled("cancelled by shutdown(cancel_futures=True)"))
        with self._lock:
            if not wait:
                self._stop_when_quiet = True
                if not self._pending and not self._running:
                    self._stop_engine(wait=False)
                return
            while (self._pending or self._running) and self._broken is None:
                self._quiet.wait()
        self._stop_engine(wait=True)

    def terminate(self, reason: str) -> None:
        """Stop now: cancel what waits, abandon what runs (killing its workers), wait."""
        with self._lock:
            self._closed = True
            orphans = [*self._pending, *self._running.values()]
            self._pending.clear()
            self._running.clear()
            self._quiet.notify_all()
            self._stopped = True
        self.engine.stop(wait=True, now=True)
        for chunk in orphans:
            chunk.sink.fail(chunk, Cancelled(reason))

    def _stop_engine(self, wait: bool) -> None:
        if not self._stopped:
            self._stopped = True
            self.engine.stop(wait=wait)
        elif wait:
            self.engine.stop(wait=True)

    @property
    def workers(self) -> int:
        return self.engine.workers


class _FutureSink:
    """Sends a single-task chunk's outcome to its ``concurrent.futures.Future``."""

    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def claim(self, chunk: Chunk) -> bool:
        return self.future.set_running_or_notify_cancel()

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        failure = report.error or report.failures.get(0)
        if failure is None:
            self.future.set_result(report.results[0])
        else:
            self.future.set_exception(task_exception(failure, chunk.describe(0), report.remote))

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        if isinstance(error, Cancelled) and self.future.cancel():
            return
        if not self.future.done():
            self.future.set_exception(chunk.blame(error))


def _describe_call(fn: Callable[..., Any], item: tuple[tuple[Any, ...], dict[str, Any]]) -> str:
    args, kwargs = item
    name = getattr(fn, "__qualname__", None) or repr(fn)
    shown = [short_repr(arg) for arg in args]
    shown += [f"{key}={short_repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"
