"""The dask engine's caller side: lanes of one Dask future each (see the package
docstring), the client and the engine's own LocalCluster, results read back."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..._errors import Cancelled, SerializationError
from ...transport import segments as _segments
from ...transport.picklers import dumps_by_value
from ..contract import (
    ChunkWork,
    Engine,
    EngineEvents,
    FunctionRef,
    WorkerSetup,
)
from .cluster import Cluster, distributed_module
from .halting import Halts
from .results import Results
from .scatter import Scatter
from .worker import _Args, _run

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
        self._results = Results(self, self._cluster)  # finished lanes, reported
        self._setup_data: Any = None

    def start(self, events: EngineEvents) -> None:
        self._events = events
        distributed_module()
        self._results.start(events)
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
        if wait and threading.current_thread() is not self._closer \
                and not self._results.is_current_thread():
            self._closer.join()

    def _close(self) -> None:
        self._halts.join()
        shares = self._scatter.drop()
        del shares  # released before the client goes
        self._cluster.close()
        self._results.end()

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
        self._results.expect(work.id, work.first)
        future.add_done_callback(lambda done: self._results.on_done(slot, work.id, done))

    def lost(self, slot: int, error: BaseException) -> None:
        """The lane's task was lost; the lane is ready again at once (it has no process
        to replace)."""
        self._events.worker_lost(slot, error)
        self.ready_again(slot)

    def finish_lane(self, slot: int, future: Any) -> bool:
        """Free the lane of ``future``; False if it no longer holds it (killed, or the
        pool stopped: already accounted for)."""
        with self._lock:
            if self._lanes.get(slot) is not future:
                return False
            del self._lanes[slot]
            return True

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
