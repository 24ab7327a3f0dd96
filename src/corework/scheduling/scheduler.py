"""The scheduler: which chunk runs on which slot, for how long, and where results go.

::

    submit()  ─▶ Chunk(1 task) ──┐                     ┌──▶ slot 0 ─┐
    MapJob    ─▶ Chunk(n tasks) ─┼─▶ pending (FIFO) ───┼──▶ slot 1 ─┼─▶ engine events
      (fed lazily from the       │   dispatched to     └──▶ slot … ─┘      │
       caller's thread)          │   idle slots    ▲                       ▼
                                 │   timer: deadlines, retry delays        chunk_done,
                                 └──── sink.deliver / sink.fail ◀───────── worker_lost

The scheduler is engine-agnostic: it talks to an :class:`~corework.engines.Engine`
through ``prepare / pack / send / kill / stop`` and hears back through the
:class:`~corework.engines.EngineEvents` methods below. Its state is a :class:`~.board.Board`
(the queues, which chunk each slot runs, and the :class:`~.timer.Timer`'s deadlines),
reached only with its lock held; so a timeout, ``Future.kill()`` and Ctrl-C are one action:
kill that slot and settle its chunk. What becomes of a chunk that ended badly is
:mod:`.recovery`'s decision. Outcomes are handed on outside the lock, so a future's
done-callbacks may submit more work; whatever those raise, the scheduler goes on.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._errors import Cancelled, CoreworkError, TaskTimeout
from .._handing_on import handing_on, is_handing_on
from ..engines import CallKind, ChunkReport, ChunkWork, Engine, FunctionRef
from .board import Board, Guarded
from .chunk import Chunk, ChunkSink
from .clock import SYSTEM_CLOCK, Clock
from .dispatch import Dispatch
from .function_cache import FunctionCache
from .future import Future
from .policy import NO_LIMITS, TaskPolicy
from .recovery import Recovery
from .sinks import FutureSink
from .timer import Timer

#: Longest one blocked wait in shutdown(), so that Ctrl-C is seen (see mapjob).
SIGNAL_CHECK_SECONDS = 0.1


class Scheduler:
    """Dispatches chunks to an engine's slots; implements ``EngineEvents``."""

    def __init__(self, engine: Engine, policy: TaskPolicy = NO_LIMITS,
                 max_tasks_per_worker: int | None = None, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.engine = engine
        self.policy = policy
        self.max_tasks_per_worker = max_tasks_per_worker
        lock = threading.RLock()  # see Guarded: Ctrl-C must never leave it held
        self._quiet = threading.Condition(lock)  # notified when nothing is left to do
        timer = Timer(lock, clock, self._tick, self._timer_failed)
        self._board = Guarded(lock, Board(engine.slots, engine.group, timer, self._quiet))
        self.dispatch = Dispatch(engine, self._board, self._quiet)
        self._ids = itertools.count()
        self._functions = FunctionCache(functools.partial(_prepare, engine, self._ids))
        #: A chunk with its arguments packed (raises SerializationError naming the task).
        self.make_chunk = _ChunkMaker(engine, self._ids, policy)
        self._recovery = Recovery(self.dispatch, self.make_chunk,
                                  functools.partial(next, self._ids))
        #: Applied to every error a future or a map hands out (the drop-in executors of
        #: corework.futures give the standard library's exception types this way).
        self.translate: Callable[[BaseException], BaseException] = _as_is
        #: Told why, once, when the pool breaks (before its pending futures fail).
        self.on_broken: Callable[[BaseException], None] | None = None
        engine.start(self)
        with self._board as board:  # an engine may settle its size as it starts (Dask's)
            for slot in [slot for slot in board.booting if slot >= engine.slots]:
                del board.booting[slot]

    @property
    def slots(self) -> int:
        """How many chunks can run at once now."""
        return self.engine.slots

    @property
    def accepting(self) -> bool:
        """Whether the pool takes new work (not shut down, not broken)."""
        with self._board as board:
            return not board.closed and board.broken is None

    @property
    def broken(self) -> BaseException | None:
        """Why the pool can run nothing more, if it cannot."""
        with self._board as board:
            return board.broken

    # ------------------------------------------------------------------ preparing work

    def function(self, fn: Callable[..., Any], *, reuse: bool = False) -> FunctionRef:
        """Prepare ``fn`` for the engine; with ``reuse``, from the cache (see
        ``function_cache``)."""
        if not callable(fn):
            raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
        if reuse:
            return self._functions.get(fn)
        return _prepare(self.engine, self._ids, fn)

    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any], policy: TaskPolicy | None = None) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` as one task; its outcome lands in the Future."""
        self.dispatch.check_open()
        sink = FutureSink(Future(), self.translate)
        sink.future._kill = functools.partial(_kill_by_ref, self, weakref.ref(sink))
        ref = self.function(fn, reuse=True)
        self.dispatch.enqueue(self.make_chunk(ref, CallKind.CALL, [(args, kwargs)], 0, sink,
                                     policy=policy))
        return sink.future

    # ------------------------------------------------------------------ engine events

    def worker_ready(self, slot: int) -> None:
        with self._board as board:
            board.tasks_run[slot] = 0
            promised = board.booting.pop(slot, None)
            if promised is not None:  # claimed already: it goes first, and here
                board.pending.appendleft(promised)
            orphan = board.running.pop(slot, None)
            if orphan is not None:  # sent to a predecessor already reported dead: never ran
                board.timer.forget(slot)
                board.queue_front(orphan)
            board.free(slot)
            starts = self.dispatch.start_idle(board)
        self.dispatch.send(starts)

    def chunk_done(self, slot: int, report: ChunkReport) -> None:
        with self._board as board:
            done = board.running.get(slot)
            if done is None or done.work.id != report.chunk_id:
                return  # a late report from a worker whose task was already written off
            board.finish_on(slot)
            recycle = board.worn_out(slot, done.size, self.max_tasks_per_worker)
            if not recycle:
                board.free(slot)
            starts = [] if recycle else self.dispatch.start_idle(board)
        if recycle:
            self.engine.restart(slot)
        self.dispatch.send(starts)
        with self.dispatch.ending():
            self._recovery.finished(done, report)

    def worker_lost(self, slot: int, error: BaseException) -> None:
        with self._board as board:
            if slot in board.idle:  # an idle worker died: the slot waits for its successor
                board.idle.remove(slot)
            promised = board.booting.pop(slot, None)
            if promised is not None:  # its worker never started: it never ran
                board.pending.appendleft(promised)
            lost = board.finish_on(slot)
        if lost is not None:
            with self.dispatch.ending():
                self._recovery.lost(lost, error)

    def engine_broken(self, error: BaseException) -> None:
        with self._board as board:
            if board.broken is not None:
                return
            board.broken = error
            orphans = board.drop_all()
            self.dispatch.stop_soon(board)  # its workers can run nothing more
        with handing_on():
            if self.on_broken is not None:
                self.on_broken(error)
            for chunk in orphans:
                chunk.sink.fail(chunk, error)

    # ------------------------------------------------------------------ stopping tasks

    def kill_task(self, sink: ChunkSink) -> bool:
        """Stop the chunk owned by ``sink``: running (its worker is killed and replaced),
        or a retry waiting in the queue or for its backoff."""
        with self._board as board:
            slot = board.slot_of(sink)
            chunk = board.finish_on(slot) if slot is not None else board.unqueue(sink)
            if chunk is not None and slot is None:
                board.ending += 1
        if chunk is None:
            return False
        if slot is not None:
            self.engine.kill(slot)
        with self.dispatch.ending():
            chunk.sink.fail(chunk, Cancelled("the task was stopped by Future.kill()"))
        return True

    def _tick(self) -> bool:
        """One round of the timer thread: kill the slots whose chunk is past its deadline,
        queue the retries whose delay is up; else sleep. False once stopped."""
        with self._board as board:
            if board.stopped:
                return False
            timed_out = [(slot, board.finish_on(slot)) for slot in board.timer.expired()]
            for retry in board.timer.due():
                board.queue_front(retry)
            starts = self.dispatch.start_idle(board)
            if not timed_out and not starts:
                board.timer.sleep()
                return True
        self.dispatch.send(starts)
        for slot, chunk in timed_out:
            self.engine.kill(slot)
            if chunk is not None:
                with self.dispatch.ending():
                    self._recovery.lost(chunk, TaskTimeout(
                        f"a task ran longer than its timeout of {chunk.policy.timeout:g} s; "
                        "its worker was stopped and replaced"))
        return True

    def _timer_failed(self, exc: BaseException) -> None:
        """The timer thread failed anyway: every pending task fails at once."""
        error = CoreworkError(f"corework's timer thread failed ({type(exc).__name__}: "
                              f"{exc}); the pool's tasks cannot finish. Please report "
                              "this as a bug.")
        error.__cause__ = exc
        self.engine_broken(error)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Take no more work; optionally drop what has not started; stop the engine."""
        with self._board as board:
            board.closed = True
            dropped = board.drop_queued() if cancel_futures else []
        for chunk in dropped:
            chunk.sink.fail(chunk, Cancelled("cancelled by shutdown(cancel_futures=True)"))
        if wait and is_handing_on():
            wait = False  # called back from an engine's thread: waiting there would deadlock
        with self._board as board:
            if not wait:
                board.stop_when_quiet = True
                self.dispatch.notify_if_quiet(board)
                return
            while board.busy() and board.broken is None:
                self._quiet.wait(SIGNAL_CHECK_SECONDS)  # see mapjob: Ctrl-C stays live
            self.dispatch.mark_stopped(board)
        self._end_engine(wait=True)

    def terminate(self, reason: str, *, gently: bool = False) -> None:
        """Stop now: cancel what waits, abandon what runs (killing its workers, or sending
        them SIGTERM if ``gently``), wait."""
        with self._board as board:
            board.closed = True
            orphans = board.drop_all()
            self.dispatch.mark_stopped(board)
        self.engine.stop(wait=True, now=True, gently=gently)
        for chunk in orphans:
            chunk.sink.fail(chunk, Cancelled(reason))
        self._end_engine(wait=False)

    def _end_engine(self, *, wait: bool) -> None:
        if wait:
            self.engine.stop(wait=True)
        with self._board as board:
            timer = board.timer
        timer.join()
        self.engine.detach()


def _kill_by_ref(scheduler: Scheduler, sink: weakref.ref[ChunkSink]) -> bool:
    """``Future.kill()``: the sink is held weakly, so a finished task's future holds
    nothing of its arguments (no cycle through the sink either)."""
    alive = sink()
    return alive is not None and scheduler.kill_task(alive)


class _ChunkMaker:
    """``Scheduler.make_chunk``: no reference to the scheduler (recovery holds this)."""

    def __init__(self, engine: Engine, ids: Iterator[int], default: TaskPolicy) -> None:
        self._engine = engine
        self._ids = ids
        self._default = default

    def __call__(self, fn: FunctionRef, kind: CallKind, items: Sequence[Any], first: int,
                 sink: ChunkSink, *, policy: TaskPolicy | None = None) -> Chunk:
        chunk = Chunk(ChunkWork(next(self._ids), fn, kind, items, first=first), sink,
                      policy or self._default)
        chunk.work.payload = self._engine.pack(items, chunk.describe)
        return chunk

    def unsent(self, fn: FunctionRef, kind: CallKind, items: Sequence[Any], first: int
               ) -> ChunkWork:
        """A chunk's work that will never be sent (its items could not be packed)."""
        return ChunkWork(next(self._ids), fn, kind, items, first=first)


def _prepare(engine: Engine, ids: Iterator[int], fn: Callable[..., Any]) -> FunctionRef:
    """``fn`` made ready by the engine, under a new id (no reference to the scheduler:
    the function cache holds this, and a cycle would keep a pool's data alive)."""
    return engine.prepare(fn, next(ids))


def _as_is(error: BaseException) -> BaseException:
    return error
