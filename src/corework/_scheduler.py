"""The scheduler: which chunk runs on which slot, for how long, and where results go.

::

    submit()  ─▶ Chunk(1 task) ──┐                     ┌──▶ slot 0 ─┐
    MapJob    ─▶ Chunk(n tasks) ─┼─▶ pending (FIFO) ───┼──▶ slot 1 ─┼─▶ engine events
      (fed lazily from the       │   dispatched to     └──▶ slot … ─┘      │
       caller's thread)          │   idle slots    ▲                       ▼
                                 │   watchdog: deadlines, retry delays     chunk_done,
                                 └──── sink.deliver / sink.fail ◀───────── worker_lost

The scheduler is engine-agnostic: it talks to an :class:`~corework.engines.Engine`
through ``prepare / pack / send / kill / stop`` and hears back through the
:class:`~corework.engines.EngineEvents` methods below. It always knows which chunk each
slot runs (``_running``) and until when (``_deadlines``), so a timeout, ``Future.kill()``
and Ctrl-C are one action: kill that slot and settle its chunk.

A chunk that loses its worker (crash, timeout, memory limit) is re-run a task at a time,
since nobody knows which task was to blame; a task that fails that way, or raises one of
``retry_on``, is run again up to ``retries`` times (see ``_assembly``). Where slots share a
worker process (``threads=``) and it dies with several chunks in it, each of them is a
*suspect*: it is run again *alone* — in a worker process running nothing else — before it
can be blamed; chunks merely stopped with a process that was ended to stop another task
are requeued as they were. Results are handed to sinks outside the lock, so a future's
done-callbacks may submit more work; whatever those raise, the scheduler goes on.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._assembly import Assembly, PartSink, owner
from ._chunk import Chunk, ChunkSink
from ._errors import Cancelled, CoreworkError, PoolClosed, TaskTimeout, WorkerCrashed
from ._function_cache import FunctionCache
from ._future import Future
from ._outcomes import task_exception
from ._policy import NO_LIMITS, TaskPolicy
from ._transport import CallKind, Failure
from .engines import ChunkReport, ChunkWork, Engine, FunctionRef

#: Longest one blocked wait in shutdown(), so that Ctrl-C is seen (see _mapjob).
SIGNAL_CHECK_SECONDS = 0.1

log = logging.getLogger("corework")


class Scheduler:
    """Dispatches chunks to an engine's slots; implements ``EngineEvents``."""

    def __init__(self, engine: Engine, policy: TaskPolicy = NO_LIMITS,
                 max_tasks_per_worker: int | None = None) -> None:
        self.engine = engine
        self.policy = policy
        self.max_tasks_per_worker = max_tasks_per_worker
        self._tasks_run: dict[int, int] = {}  # slot -> tasks its current worker has run
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)  # notified when nothing is left to do
        self._timer = threading.Condition(self._lock)  # wakes the watchdog
        self._pending: deque[Chunk] = deque()
        self._alone: deque[Chunk] = deque()  # suspects: each runs with nothing beside it
        self._isolating: set[int] = set()  # slot groups that run one of them each, alone
        self._idle: list[int] = []
        # Slots whose first worker is still starting, and the chunk promised to each: as
        # in concurrent.futures, work handed to a worker counts as started at once (so
        # shutdown(cancel_futures=True) just after submit() leaves it to run).
        self._booting: dict[int, Chunk | None] = dict.fromkeys(range(engine.slots))
        self._running: dict[int, Chunk] = {}
        self._deadlines: dict[int, float] = {}  # slot -> when its chunk times out
        self._delayed: list[tuple[float, int, Chunk]] = []  # retries waiting for backoff
        self._watchdog: threading.Thread | None = None
        self._ids = itertools.count()
        self._functions = FunctionCache(functools.partial(_prepare, engine, self._ids))
        self._closed = False
        self._stop_when_quiet = False
        self._settling = 0  # chunks taken off a slot whose outcome is not yet handed on
        self._stopped = False
        self._broken: BaseException | None = None
        #: Applied to every error a future or a map hands out (the drop-in executors of
        #: corework.futures give the standard library's exception types this way).
        self.translate: Callable[[BaseException], BaseException] = _as_is
        #: Told why, once, when the pool breaks (before its pending futures fail).
        self.on_broken: Callable[[BaseException], None] | None = None
        engine.start(self)
        with self._lock:  # an engine may settle its size as it starts (a Dask cluster's)
            for slot in [slot for slot in self._booting if slot >= engine.slots]:
                del self._booting[slot]

    @property
    def workers(self) -> int:
        return self.engine.workers

    @property
    def slots(self) -> int:
        """How many chunks can run at once now."""
        return self.engine.slots

    # ------------------------------------------------------------------ preparing work

    def function(self, fn: Callable[..., Any], *, reuse: bool = False) -> FunctionRef:
        """Prepare ``fn`` for the engine; with ``reuse``, from the cache (see
        ``_function_cache``)."""
        if not callable(fn):
            raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
        if reuse:
            return self._functions.get(fn)
        return _prepare(self.engine, self._ids, fn)

    def make_chunk(self, fn: FunctionRef, kind: CallKind, items: Sequence[Any], first: int,
                   sink: ChunkSink, *, policy: TaskPolicy | None = None) -> Chunk:
        """A chunk with its arguments packed (raises SerializationError naming the task)."""
        chunk = Chunk(ChunkWork(next(self._ids), fn, kind, items), first, sink,
                      policy or self.policy)
        chunk.work.payload = self.engine.pack(items, chunk.describe)
        return chunk

    def unsent_work(self, fn: FunctionRef, kind: CallKind, items: Sequence[Any]) -> ChunkWork:
        """A chunk's work that will never be sent (its items could not be packed)."""
        return ChunkWork(next(self._ids), fn, kind, items)

    def submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any], policy: TaskPolicy | None = None) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` as one task; its outcome lands in the Future."""
        self.check_open()
        sink = _FutureSink(Future(), self.translate)
        sink.future._kill = functools.partial(self._kill_by_ref, weakref.ref(sink))
        ref = self.function(fn, reuse=True)
        self.enqueue(self.make_chunk(ref, CallKind.CALL, [(args, kwargs)], 0, sink,
                                     policy=policy))
        return sink.future

    # ------------------------------------------------------------------ dispatching

    def check_open(self) -> None:
        """Raise if no new work may be submitted."""
        if self._broken is not None:
            error = copy.copy(self._broken)  # a fresh traceback each time it is raised
            raise error.with_traceback(None) from self._broken.__cause__
        if self._closed:
            raise PoolClosed("cannot submit work after the pool was shut down")

    def enqueue(self, chunk: Chunk) -> None:
        """Queue a new chunk; it starts at once if a slot is idle."""
        with self._lock:
            self.check_open()
            self._pending.append(chunk)
            starts = self._start_idle()
        self._send(starts)

    def _requeue(self, chunk: Chunk) -> None:
        """Queue a re-run ahead of new work (also after shutdown, which waits for it)."""
        with self._lock:
            broken = self._broken
            if broken is None:
                self._queue_front(chunk)
                starts = self._start_idle()
        if broken is not None:
            chunk.sink.fail(chunk, broken)
            return
        self._send(starts)

    def _promise_to_booting(self) -> None:
        """With the lock held: give each starting slot without one a chunk to run first."""
        for slot, promised in self._booting.items():
            if promised is None:
                chunk = self._take(self._pending)
                if chunk is None:
                    return
                self._booting[slot] = chunk

    def _queue_front(self, chunk: Chunk) -> None:
        """With the lock held: queue a chunk to run before new work."""
        (self._alone if chunk.alone else self._pending).appendleft(chunk)

    def _start_idle(self) -> list[tuple[int, Chunk]]:
        """With the lock held: give queued chunks to the idle slots that may take them."""
        starts = []
        for slot in reversed(self._idle[:]):  # the slot freed last first: it is warm
            if not (self._pending or self._alone):
                break
            chunk = self._take_for(slot)
            if chunk is not None:
                self._idle.remove(slot)
                self._start_on(slot, chunk)
                starts.append((slot, chunk))
        if self._booting and self._pending:
            self._promise_to_booting()
        self._notify_if_quiet()  # claim() may have dropped the last chunks
        return starts

    def _send(self, starts: list[tuple[int, Chunk]]) -> None:
        for slot, chunk in starts:
            self.engine.send(slot, chunk.work)

    def _take_for(self, slot: int) -> Chunk | None:
        """With the lock held: the chunk the free ``slot`` runs next, if any.

        A suspect runs alone in a slot group (a worker process): a group chosen for one
        takes nothing new on its other slots until it is free of other chunks, then runs
        the suspect and nothing beside it. Groups are chosen while there are more
        suspects waiting than groups at work on them, so several run at once."""
        group = self.engine.group(slot)
        if group not in self._isolating and len(self._isolating) < len(self._alone):
            self._isolating.add(group)
        if group in self._isolating:
            if any(self.engine.group(busy) == group for busy in self._running):
                return None  # draining: the suspect waits for the others to end
            chunk = self._take(self._alone)
            if chunk is not None:
                return chunk
            self._isolating.discard(group)  # no suspect left for it
        return self._take(self._pending)

    @staticmethod
    def _take(queue: deque[Chunk]) -> Chunk | None:
        """With the lock held: the next chunk of ``queue`` whose owner still wants it."""
        while queue:
            chunk = queue.popleft()
            # A chunk back in the queue (it never reached a worker) was claimed before.
            if chunk.sink.wanted() if chunk.claimed else chunk.sink.claim(chunk):
                chunk.claimed = True
                return chunk
        return None

    def _start_on(self, slot: int, chunk: Chunk) -> None:
        """With the lock held: ``chunk`` runs on ``slot`` from now, until its deadline."""
        self._running[slot] = chunk
        if chunk.policy.timeout is not None:
            self._deadlines[slot] = time.monotonic() + chunk.policy.timeout
            self._wake_watchdog()

    def _finish_on(self, slot: int) -> Chunk | None:
        """With the lock held: the slot's chunk is over; forget it and its deadline.

        The chunk counts as *settling* until ``_settled()``: its outcome (or its re-run)
        is still to come, so the pool is not quiet yet.
        """
        self._deadlines.pop(slot, None)
        chunk = self._running.pop(slot, None)
        if chunk is not None:
            self._settling += 1
        return chunk

    def _settled(self) -> None:
        """A chunk taken by ``_finish_on`` has been delivered, failed or requeued."""
        with self._lock:
            self._settling -= 1
            self._notify_if_quiet()

    def _next_for(self, slot: int) -> list[tuple[int, Chunk]]:
        """With the lock held: the slot is free; the chunks to start now (on it, or on
        others of its group that an ended isolation frees)."""
        if slot not in self._idle:
            self._idle.append(slot)
        starts = self._start_idle()
        self._notify_if_quiet()
        return starts

    def _busy(self) -> bool:
        """With the lock held: is any submitted work not yet settled?"""
        return bool(self._pending or self._alone or self._running or self._delayed
                    or self._settling or any(self._booting.values()))

    def _notify_if_quiet(self) -> None:
        if not self._busy():
            self._quiet.notify_all()
            if self._stop_when_quiet:
                self._stop_soon()

    # ------------------------------------------------------------------ engine events

    def worker_ready(self, slot: int) -> None:
        with self._lock:
            self._tasks_run[slot] = 0
            promised = self._booting.pop(slot, None)
            if promised is not None:  # claimed already: it goes first, and here
                self._pending.appendleft(promised)
            orphan = self._running.pop(slot, None)
            if orphan is not None:  # sent to a predecessor already reported dead: never ran
                self._deadlines.pop(slot, None)
                self._queue_front(orphan)
            starts = self._next_for(slot)
        self._send(starts)

    def chunk_done(self, slot: int, report: ChunkReport) -> None:
        with self._lock:
            done = self._running.get(slot)
            if done is None or done.work.id != report.chunk_id:
                return  # a late report from a worker whose task was already written off
            self._finish_on(slot)
            recycle = self._worn_out(slot, done.size)
            starts = [] if recycle else self._next_for(slot)
        if recycle:
            self.engine.restart(slot)
        self._send(starts)
        with _reporting():
            try:
                self._settle(done, report)
            finally:
                self._settled()

    def _worn_out(self, slot: int, tasks: int) -> bool:
        """With the lock held: count ``tasks`` run on ``slot``; True if it is to be recycled."""
        self._tasks_run[slot] = self._tasks_run.get(slot, 0) + tasks
        limit = self.max_tasks_per_worker
        return limit is not None and self._tasks_run[slot] >= limit and not self._stopped

    def worker_lost(self, slot: int, error: BaseException) -> None:
        with self._lock:
            if slot in self._idle:  # an idle worker died: the slot waits for its successor
                self._idle.remove(slot)
            promised = self._booting.pop(slot, None)
            if promised is not None:  # its worker never started: it never ran
                self._pending.appendleft(promised)
            lost = self._finish_on(slot)
        if lost is None:
            return
        with _reporting():
            try:
                self._lost(lost, error)
            finally:
                self._settled()

    def engine_broken(self, error: BaseException) -> None:
        with self._lock:
            if self._broken is not None:
                return
            self._broken = error
            orphans = self._drop_all()
            self._stop_soon()  # its workers can run nothing more
        with _reporting():
            if self.on_broken is not None:
                self.on_broken(error)
            for chunk in orphans:
                chunk.sink.fail(chunk, error)

    # ------------------------------------------------------------------ outcomes and retries

    def _settle(self, chunk: Chunk, report: ChunkReport) -> None:
        """Deliver a finished chunk, first re-running the tasks whose exception warrants it."""
        if report.error is not None and chunk.size > 1:
            self._split(chunk)  # e.g. one argument could not be unpickled: find which
            return
        retry = [position for position, failure in report.failures.items()
                 if isinstance(failure, Failure) and chunk.attempt <= chunk.policy.retries
                 and chunk.policy.retries_failure(failure)]
        if not retry:
            chunk.sink.deliver(chunk, report)
        elif chunk.size == 1:
            self._retry(chunk)
        else:
            assembly = Assembly(chunk, report, retry)
            for position in retry:
                self._retry(self._part(chunk, assembly, position))

    def _lost(self, chunk: Chunk, error: BaseException) -> None:
        """The chunk's worker died, timed out or was over its memory limit."""
        if isinstance(error, Cancelled) or not chunk.sink.wanted():
            chunk.sink.fail(chunk, error)
        elif isinstance(error, WorkerCrashed) and (not error.started or error.collateral):
            self._requeue(chunk)  # it never reached the worker, or was a bystander
        elif isinstance(error, WorkerCrashed) and error.shared and not chunk.alone:
            self._isolate(chunk)  # one of the worker's chunks crashed it: which one?
        elif chunk.size > 1:
            self._split(chunk)
        elif chunk.attempt <= chunk.policy.retries and chunk.policy.retries_error(error):
            self._retry(chunk)
        else:
            chunk.sink.fail(chunk, _with_attempts(error, chunk.attempt))

    def _split(self, chunk: Chunk) -> None:
        """Which of the chunk's tasks was to blame? Run each again, alone."""
        assembly = Assembly(chunk, None, range(chunk.size))
        for position in reversed(range(chunk.size)):  # requeued at the front: keep order
            self._requeue(self._part(chunk, assembly, position))

    def _isolate(self, chunk: Chunk) -> None:
        """Run a suspect again in a worker process with nothing else in it (its tasks one
        by one): only a crash there blames it."""
        chunk.alone = True
        if chunk.size > 1:
            self._split(chunk)
        else:
            self._requeue(chunk)

    def _part(self, chunk: Chunk, assembly: Assembly, position: int) -> Chunk:
        """Task ``position`` of ``chunk`` as a chunk of its own, reporting to ``assembly``."""
        items = chunk.work.items[position:position + 1]
        part = self.make_chunk(chunk.work.fn, chunk.work.kind, items, chunk.first + position,
                               assembly.sink_for(position), policy=chunk.policy)
        part.attempt = chunk.attempt
        part.alone = chunk.alone
        return part

    def _retry(self, chunk: Chunk) -> None:
        """Run ``chunk`` (of one task) again, after its backoff delay. The retry reports
        to an Assembly, so the owner sees the original chunk settle, once."""
        sink = chunk.sink if isinstance(chunk.sink, PartSink) else Assembly(
            chunk, None, [0]).sink_for(0)
        work = ChunkWork(next(self._ids), chunk.work.fn, chunk.work.kind, chunk.work.items,
                         chunk.work.payload)
        retry = Chunk(work, chunk.first, sink, chunk.policy, chunk.attempt + 1,
                      alone=chunk.alone)
        delay = chunk.policy.delay(chunk.attempt)
        if not delay:
            self._requeue(retry)
            return
        with self._lock:
            heapq.heappush(self._delayed, (time.monotonic() + delay, retry.work.id, retry))
            self._wake_watchdog()

    # ------------------------------------------------------------------ stopping tasks

    def _kill_by_ref(self, sink: weakref.ref[ChunkSink]) -> bool:
        """``Future.kill()``: the sink is held weakly, so a finished task's future holds
        nothing of its arguments (no cycle through the sink either)."""
        alive = sink()
        return alive is not None and self.kill_task(alive)

    def kill_task(self, sink: ChunkSink) -> bool:
        """Stop the chunk owned by ``sink``: running (its worker is killed and replaced),
        or a retry waiting in the queue or for its backoff."""
        with self._lock:
            slot = next((s for s, c in self._running.items() if owner(c.sink) is sink), None)
            chunk = self._finish_on(slot) if slot is not None else self._unqueue(sink)
            if chunk is not None and slot is None:
                self._settling += 1
        if chunk is None:
            return False
        if slot is not None:
            self.engine.kill(slot)
        try:
            chunk.sink.fail(chunk, Cancelled("the task was stopped by Future.kill()"))
        finally:
            self._settled()
        return True

    def _unqueue(self, sink: ChunkSink) -> Chunk | None:
        """With the lock held: take a chunk owned by ``sink`` out of the queues."""
        for queue in (self._pending, self._alone):
            for chunk in queue:
                if owner(chunk.sink) is sink:
                    queue.remove(chunk)
                    return chunk
        for slot, promised in self._booting.items():
            if promised is not None and owner(promised.sink) is sink:
                self._booting[slot] = None
                return promised
        for entry in self._delayed:
            if owner(entry[2].sink) is sink:
                self._delayed.remove(entry)
                heapq.heapify(self._delayed)
                return entry[2]
        return None

    def _wake_watchdog(self) -> None:
        """With the lock held: (start and) wake the thread that watches the clock."""
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="corework-watchdog",
                                              daemon=True)
            self._watchdog.start()
        self._timer.notify()

    def _watch(self) -> None:
        """The watchdog thread; should it fail anyway, every pending task fails at once."""
        try:
            self._watch_loop()
        except BaseException as exc:
            error = CoreworkError(f"corework's watchdog thread failed ({type(exc).__name__}: "
                                  f"{exc}); the pool's tasks cannot finish. Please report "
                                  "this as a bug.")
            error.__cause__ = exc
            self.engine_broken(error)

    def _watch_loop(self) -> None:
        """Kill slots whose chunk is past its deadline; requeue retries whose delay is up."""
        while True:
            with self._lock:
                if self._stopped:
                    return
                now = time.monotonic()
                expired = [slot for slot, when in self._deadlines.items() if when <= now]
                timed_out = [(slot, self._finish_on(slot)) for slot in expired]
                while self._delayed and self._delayed[0][0] <= now:
                    self._queue_front(heapq.heappop(self._delayed)[2])
                starts = self._start_idle()
                if not timed_out and not starts:
                    self._timer.wait(self._next_wake(now))
                    continue
            self._send(starts)
            for slot, chunk in timed_out:
                self.engine.kill(slot)
                if chunk is not None:
                    with _reporting():
                        try:
                            self._lost(chunk, TaskTimeout(
                                f"a task ran longer than its timeout of "
                                f"{chunk.policy.timeout:g} s; its worker was stopped and "
                                "replaced"))
                        finally:
                            self._settled()

    def _next_wake(self, now: float) -> float | None:
        times = [*self._deadlines.values(), *(when for when, _, _ in self._delayed[:1])]
        return max(0.0, min(times) - now) if times else None

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Take no more work; optionally drop what has not started; stop the engine."""
        with self._lock:
            self._closed = True
            dropped = [*self._alone, *self._pending, *(c for _, _, c in self._delayed)
                       ] if cancel_futures else []
            if cancel_futures:
                self._pending.clear()
                self._alone.clear()
                self._delayed.clear()
        for chunk in dropped:
            chunk.sink.fail(chunk, Cancelled("cancelled by shutdown(cancel_futures=True)"))
        reporting: int = getattr(_local, "reporting", 0)
        if wait and reporting > 0:
            wait = False  # called back from an engine's thread: waiting there would deadlock
        with self._lock:
            if not wait:
                self._stop_when_quiet = True
                self._notify_if_quiet()
                return
            while self._busy() and self._broken is None:
                self._quiet.wait(SIGNAL_CHECK_SECONDS)  # see _mapjob: Ctrl-C stays live
            self._mark_stopped()
        self.engine.stop(wait=True)
        self._join_watchdog()
        self.engine.detach()

    def terminate(self, reason: str, *, gently: bool = False) -> None:
        """Stop now: cancel what waits, abandon what runs (killing its workers, or sending
        them SIGTERM if ``gently``), wait."""
        with self._lock:
            self._closed = True
            orphans = self._drop_all()
            self._mark_stopped()
        self.engine.stop(wait=True, now=True, gently=gently)
        for chunk in orphans:
            chunk.sink.fail(chunk, Cancelled(reason))
        self._join_watchdog()
        self.engine.detach()

    def _drop_all(self) -> list[Chunk]:
        """With the lock held: forget every chunk not yet settled, and return them."""
        orphans = [*self._alone, *self._pending, *self._running.values(),
                   *(c for _, _, c in self._delayed),
                   *(c for c in self._booting.values() if c is not None)]
        self._booting.clear()
        self._pending.clear()
        self._alone.clear()
        self._isolating.clear()
        self._running.clear()
        self._deadlines.clear()
        self._delayed.clear()
        self._quiet.notify_all()
        return orphans

    def _stop_soon(self) -> None:
        """With the lock held: let the engine's workers finish and exit (no waiting)."""
        if not self._stopped:
            self._mark_stopped()
            self.engine.stop(wait=False)

    def _mark_stopped(self) -> None:
        """With the lock held: no more dispatching; the watchdog ends."""
        self._stopped = True
        self._timer.notify()

    def _join_watchdog(self) -> None:
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join()


class _FutureSink:
    """Sends a single-task chunk's outcome to its Future."""

    def __init__(self, future: Future[Any],
                 translate: Callable[[BaseException], BaseException]) -> None:
        self.future = future
        self.translate = translate

    def claim(self, chunk: Chunk) -> bool:
        return self.future.set_running_or_notify_cancel()

    def wanted(self) -> bool:
        return not self.future.done()

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        failure = report.error or report.failures.get(0)
        with _callbacks_of(self.future):
            if failure is None:
                self.future.set_result(report.results[0])
            else:
                self.future.set_exception(self.translate(
                    task_exception(failure, chunk.describe(0), report.remote)))

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        with _callbacks_of(self.future):
            if isinstance(error, Cancelled) and self.future.cancel():
                with contextlib.suppress(RuntimeError):  # already notified
                    self.future.set_running_or_notify_cancel()  # else wait() never sees it
                return
            if not self.future.done():
                self.future.set_exception(self.translate(chunk.blame(error)))


@contextlib.contextmanager
def _callbacks_of(future: Future[Any]) -> Iterator[None]:
    """Settling a future runs its done-callbacks here; concurrent.futures logs what they
    raise but lets a BaseException (SystemExit, KeyboardInterrupt) through. Log that too:
    the thread settling futures serves the whole pool."""
    try:
        yield
    except BaseException:
        log.exception("a done-callback of %r raised; corework's thread goes on", future)


_local = threading.local()  # .reporting: depth of engine callbacks on this thread


@contextlib.contextmanager
def _reporting() -> Iterator[None]:
    """Mark this thread as delivering outcomes (so a done-callback's shutdown won't wait)."""
    _local.reporting = getattr(_local, "reporting", 0) + 1
    try:
        yield
    finally:
        _local.reporting -= 1


def _prepare(engine: Engine, ids: Iterator[int], fn: Callable[..., Any]) -> FunctionRef:
    """``fn`` made ready by the engine, under a new id (no reference to the scheduler:
    the function cache holds this, and a cycle would keep a pool's data alive)."""
    return engine.prepare(fn, next(ids))


def _as_is(error: BaseException) -> BaseException:
    return error


def _with_attempts(error: BaseException, attempts: int) -> BaseException:
    """Record on a final error how many times its task was tried."""
    if isinstance(error, CoreworkError):
        error = copy.copy(error)
        error.attempts = attempts  # type: ignore[attr-defined]
    return error
