"""The dask engine's caller side: lanes of one Dask future each (see the package
docstring), the client and the engine's own LocalCluster, results read back."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..._errors import Cancelled, SerializationError, WorkerCrashed
from ..._signals import block_in_this_thread
from ...transport import segments as _segments
from ...transport.failure import Failure
from ...transport.picklers import dumps_by_value
from ..contract import (
    ChunkReport,
    ChunkWork,
    Engine,
    EngineEvents,
    FunctionRef,
    WorkerSetup,
    initializer_failed,
)
from .cluster import Cluster, distributed_module
from .halting import Halts
from .scatter import Scatter
from .worker import _Args, _run, _SetupFailed

__all__ = ["DaskEngine", "check_options"]

#: A pool's setup (initializer, initargs, log levels) up to this size goes in every task:
#: no worker's death can lose it. A larger one is scattered to every worker once (lost,
#: and the pool's tasks fail, if every worker that holds it dies).
SETUP_IN_TASKS = 64 * 1024

log = logging.getLogger("corework.dask")


def check_options(*, memory_limit: int | None, max_tasks_per_worker: int | None) -> None:
    """Refuse the pool options Dask cannot honour through corework."""
    if memory_limit is not None:
        raise ValueError(
            "memory_limit is not supported with engine='dask': Dask workers have a memory "
            "limit of their own (dask worker --memory-limit, or LocalCluster(memory_limit=...) "
            "passed as address=cluster.scheduler_address)")
    if max_tasks_per_worker is not None:
        raise ValueError(
            "max_tasks_per_worker is not supported with engine='dask': the workers belong "
            "to the Dask cluster, which corework does not recycle")


class DaskEngine(Engine):
    """Slots are lanes of one Dask future each; see the module docstring."""

    def __init__(self, workers: int, setup: WorkerSetup, address: str | None = None,
                 sized: bool = True) -> None:
        super().__init__(workers, setup)
        self.address = address
        self._sized = sized  # False: the cluster's thread count decides ``workers``
        self._token = uuid.uuid4().hex[:8]  # names this pool's tasks and worker state
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._lanes: dict[int, Any] = {}  # slot -> its Dask future in flight
        self._cluster = Cluster()
        self._scatter = Scatter(self._cluster)  # packs chunks; keeps the shares it scattered
        self._stopping = False
        self._halts = Halts(self, self._cluster)  # tasks being stopped, in the background
        self._closer: threading.Thread | None = None
        #: Finished lanes, as (slot, chunk id, future, outcome, error); None ends it.
        self._results: queue.SimpleQueue[tuple[int, int, Any, Any, BaseException | None]
                                         | None] = queue.SimpleQueue()
        self._reporter = threading.Thread(target=self._report_results,
                                          name="corework-dask-results", daemon=True)
        self._setup_data: Any = None

    def start(self, events: EngineEvents) -> None:
        self._events = events
        distributed_module()
        self._reporter.start()
        try:
            self._cluster.connect(self.address, self.workers)
            if not self._sized:
                self.workers = self._cluster.threads()
            relay = self.setup.relay_logs and self.setup.log_levels is not None
            if self.setup.initializer is not None or relay:
                # Only workers of the pool's own cluster take this process's logger
                # levels; a cluster others share keeps its own (it relays what they let by).
                setup = self.setup if self._cluster.own is not None or not relay else \
                    dataclasses.replace(self.setup, log_levels={})
                blob = _dumps(setup, f"the initializer {self.setup.initializer!r} "
                                     "or its initargs")
                self._setup_data = blob if len(blob) <= SETUP_IN_TASKS else \
                    self._cluster.client.scatter(blob, broadcast=True, hash=False)
        except BaseException:
            self._close()
            raise
        _segments.on_release(self._scatter.released)
        for slot in range(self.workers):
            events.worker_ready(slot)

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        """Close the client (and the LocalCluster this engine started).

        With ``now``, running tasks are stopped too: an own LocalCluster is closed (its
        worker processes end); on a shared cluster their workers are restarted.
        ``gently`` changes nothing here: a worker process is ended the one way its
        nanny replaces it, which a task's thread stuck in Python cannot delay."""
        with self._lock:
            self._stopping = True
            running = list(self._lanes.values()) if now else []
            self._lanes.clear()
            if self._closer is None:
                self._closer = threading.Thread(target=self._close,
                                                name="corework-dask-closer", daemon=True)
                closer: threading.Thread | None = self._closer
            else:
                closer = None
        if running and self._cluster.own is None:
            self._halts.start(running)  # no slot to make ready: the pool is stopping
        if closer is not None:
            closer.start()
        # Not from the results thread (a done-callback's Pool.kill): the closer waits
        # for that thread to end.
        if wait and threading.current_thread() not in (self._closer, self._reporter):
            self._closer.join()

    def _close(self) -> None:
        self._halts.join()
        shares = self._scatter.drop()
        del shares  # released before the client goes
        self._cluster.close()
        self._results.put(None)
        if self._reporter.is_alive() and self._reporter is not threading.current_thread():
            self._reporter.join()

    def prepare(self, fn: Callable[..., Any], fn_id: int) -> FunctionRef:
        return FunctionRef(fn_id, fn, _dumps(fn, f"the function {fn!r}"))

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        """Pickle the items; their large buffers and shares are scattered, not inlined."""
        return self._scatter.pack(items, describe)

    def send(self, slot: int, work: ChunkWork) -> None:
        args: _Args = work.payload
        name = getattr(work.fn.fn, "__name__", "task")
        key = f"corework-{name}-{self._token}-{next(self._keys)}"
        self._cluster.keep_whole(self.workers)
        try:
            future = self._cluster.client.submit(
                _run, key, (self._token, self._setup_data), (work.fn.id, work.fn.blob),
                (work.id, int(work.kind), args.data, list(args.refs)), pure=False, key=key)
        except Exception as exc:  # the client was closed, or lost its scheduler
            with self._lock:
                stopping = self._stopping
            if not stopping:
                self._events.engine_broken(ConnectionError(
                    f"cannot send work to the Dask scheduler: {exc}"))
            return
        with self._lock:
            if self._stopping:
                return
            self._lanes[slot] = future
        future.add_done_callback(lambda done: self._on_done(slot, work.id, done))

    def _on_done(self, slot: int, chunk_id: int, future: Any) -> None:
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

    def _report_results(self) -> None:
        """The results thread: report each finished lane's chunk, until ``None``."""
        block_in_this_thread()  # Ctrl-C is the main thread's (see corework._signals)
        while (item := self._results.get()) is not None:
            slot, chunk_id, future, outcome, error = item
            with self._lock:
                if self._lanes.get(slot) is not future:
                    continue  # killed, or the pool stopped: already accounted for
                del self._lanes[slot]
            try:
                self._report(slot, chunk_id, future, outcome, error)
            except BaseException as exc:  # this thread must live on: report, and go on
                log.exception("corework could not report a Dask result")
                with contextlib.suppress(BaseException):
                    self._events.chunk_done(slot, _failed(chunk_id, exc))

    def _report(self, slot: int, chunk_id: int, future: Any, outcome: Any,
                error: BaseException | None) -> None:
        if future.status == "error":
            self._on_error(slot, chunk_id, future.exception())
        elif future.status == "cancelled":  # not by us: the scheduler forgot it
            self._lost(slot, WorkerCrashed(
                "the Dask scheduler dropped the task (was it restarted, or the connection "
                "to it lost?)"))
        elif error is not None:  # e.g. a result whose class cannot be imported here
            self._events.chunk_done(slot, _failed(chunk_id, SerializationError(
                f"a result from a Dask worker cannot be unpickled here: {error}",
                stage="unpickle-result", original=error)))
        else:
            self._on_finished(slot, chunk_id, outcome)

    def _on_finished(self, slot: int, chunk_id: int, outcome: Any) -> None:
        if isinstance(outcome, _SetupFailed):
            self._events.engine_broken(initializer_failed(
                self.setup, "in a Dask worker", outcome.failure))
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
            from ..log_relay import rebuild

            for position, fields in outcome.logs:
                self._events.task_logged(slot, chunk_id, position, rebuild(fields, slot))
        self._events.chunk_done(slot, report)

    def _on_error(self, slot: int, chunk_id: int, exc: BaseException) -> None:
        killed = getattr(distributed_module(), "KilledWorker", ())
        if isinstance(exc, killed):
            self._lost(slot, WorkerCrashed(
                f"the task's Dask worker died each time it ran it ({exc}); Dask gave up "
                "after distributed.scheduler.allowed-failures tries"))
            return
        self._events.chunk_done(slot, _failed(chunk_id, exc))  # e.g. unpicklable here

    def _lost(self, slot: int, error: BaseException) -> None:
        self._events.worker_lost(slot, error)
        with self._lock:
            stopping = self._stopping
        if not stopping:
            self._events.worker_ready(slot)  # a lane has no process to replace

    def kill(self, slot: int) -> None:
        """Free the lane of its task: the worker process running it is ended and the task
        cancelled; the lane is ready again once that worker is replaced (as a process
        engine slot is), so that its next task does not wait behind the restart."""
        with self._lock:
            future = self._lanes.pop(slot, None)
        self._events.worker_lost(slot, Cancelled("the task was stopped; its Dask worker "
                                                 "process was ended and replaced"))
        if future is None:
            self.ready_again(slot)
        else:
            self._halts.start([future], slot)

    def stopping(self) -> bool:
        """Whether the pool is stopping (for ``Halts``)."""
        with self._lock:
            return self._stopping

    def ready_again(self, slot: int) -> None:
        """The lane is free to run a chunk (unless the pool is stopping)."""
        if not self.stopping():
            self._events.worker_ready(slot)

    def restart(self, slot: int) -> None:
        """Lanes hold no worker of their own to recycle: the slot is ready again."""
        self._events.worker_ready(slot)


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return dumps_by_value(obj)
    except Exception as exc:
        raise SerializationError(
            f"cannot send {what} to a Dask worker: {exc}. Make sure everything it refers "
            "to can be pickled, or use engine='thread'.", stage="pickle-argument",
            original=exc) from exc


def _failed(chunk_id: int, exc: BaseException) -> ChunkReport:
    """A chunk none of whose tasks could run (so the scheduler splits it, or fails it)."""
    return ChunkReport(chunk_id, [], {}, 0.0, Failure.capture(exc), True)
