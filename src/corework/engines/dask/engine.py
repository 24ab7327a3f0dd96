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

from ..._errors import Cancelled, CoreworkError, SerializationError, WorkerCrashed
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
from .halting import Halts
from .scatter import Scatter
from .worker import _Args, _run, _SetupFailed

__all__ = ["DaskEngine", "check_options"]

#: How long a pool given no ``workers`` waits for the scheduler to have a worker (its
#: thread count sizes the pool).
WORKERS_WAIT_SECONDS = 60.0

#: How long a client may take to reach a scheduler before the pool says it cannot.
CONNECT_SECONDS = 10.0
#: A pool's setup (initializer, initargs, log levels) up to this size goes in every task:
#: no worker's death can lose it. A larger one is scattered to every worker once (lost,
#: and the pool's tasks fail, if every worker that holds it dies).
SETUP_IN_TASKS = 64 * 1024

_INSTALL = "engine='dask' needs Dask's distributed package: pip install 'corework[dask]'"

log = logging.getLogger("corework.dask")


def _distributed() -> Any:
    """The ``distributed`` module, imported on first use (corework does not need it)."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return distributed


def _private_security() -> Any:
    """TLS with throw-away credentials, known to this process and the cluster it starts
    alone: no other user of the machine can connect to its scheduler or workers (which
    would run code as this user, in this process)."""
    from distributed.security import Security

    try:
        return Security.temporary()  # type: ignore[no-untyped-call]
    except ImportError:
        raise ImportError(
            "engine='dask' without address= starts a private cluster secured with TLS, "
            "which needs the cryptography package: pip install 'corework[dask]'") from None


def _reachable(address: str) -> None:
    """Raise OSError unless something listens at a tcp:// or tls:// ``address`` (found
    before a Client is made: a Client that fails leaves its event loop's thread behind)."""
    import socket

    scheme, _, rest = address.rpartition("://")
    if scheme not in ("tcp", "tls", ""):
        return  # another transport (inproc, ucx): the Client finds out
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return
    socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                             timeout=CONNECT_SECONDS).close()


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
        self._scatter = Scatter(self)  # packs chunks; keeps the shares it scattered
        self._stopping = False
        self._halts = Halts(self)  # tasks being stopped, in the background
        self._closer: threading.Thread | None = None
        #: Finished lanes, as (slot, chunk id, future, outcome, error); None ends it.
        self._results: queue.SimpleQueue[tuple[int, int, Any, Any, BaseException | None]
                                         | None] = queue.SimpleQueue()
        self._reporter = threading.Thread(target=self._report_results,
                                          name="corework-dask-results", daemon=True)
        self._cluster: Any = None
        self._client: Any = None
        self._setup_data: Any = None

    def start(self, events: EngineEvents) -> None:
        self._events = events
        distributed = _distributed()
        self._reporter.start()
        try:
            self._connect(distributed)
            relay = self.setup.relay_logs and self.setup.log_levels is not None
            if self.setup.initializer is not None or relay:
                # Only workers of the pool's own cluster take this process's logger
                # levels; a cluster others share keeps its own (it relays what they let by).
                setup = self.setup if self._cluster is not None or not relay else \
                    dataclasses.replace(self.setup, log_levels={})
                blob = _dumps(setup, f"the initializer {self.setup.initializer!r} "
                                     "or its initargs")
                self._setup_data = blob if len(blob) <= SETUP_IN_TASKS else \
                    self._client.scatter(blob, broadcast=True, hash=False)
        except BaseException:
            self._close()
            raise
        _segments.on_release(self._scatter.released)
        for slot in range(self.workers):
            events.worker_ready(slot)

    def _connect(self, distributed: Any) -> None:
        import dask

        address = self.address or dask.config.get("scheduler-address", None)
        security = None  # the user's cluster: Dask's own configuration (distributed.comm.tls)
        if address is None and _in_dask_task(distributed):
            # A task using corework: run on its own cluster, and let its worker run other
            # tasks while this one's thread waits for results (as worker_client() does).
            worker = distributed.get_worker()
            address, security = worker.scheduler.address, worker.security
            distributed.secede()
        if address is None:
            security = _private_security()
            # No dashboard; the scheduler's HTTP server (it has one anyway) on a free
            # port, not 8787, which another Dask scheduler here may have taken.
            self._cluster = distributed.LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None, security=security,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            address = self._cluster.scheduler_address
        try:
            _reachable(address)
            self._client = distributed.Client(address, set_as_default=False,
                                              security=security, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {address} within {CONNECT_SECONDS:g} s "
                f"({type(exc).__name__}: {exc}): start one with `dask scheduler` and workers "
                f"with `dask worker {address}`, or check the address") from None
        if not self._sized:
            self.workers = self._cluster_threads(address)

    def _cluster_threads(self, address: str) -> int:
        try:
            self._client.wait_for_workers(1, timeout=WORKERS_WAIT_SECONDS)
        except TimeoutError:
            raise CoreworkError(
                f"no Dask worker joined the scheduler at {address} within "
                f"{WORKERS_WAIT_SECONDS:g} s: start some with `dask worker {address}`, or "
                "pass workers=N to queue work until they come") from None
        return max(1, int(sum(self._client.nthreads().values())))

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
        if running and self._cluster is None:
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
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
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
        self._keep_own_cluster_whole()
        try:
            future = self._client.submit(
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
            self._client.loop.add_callback(self._fetch, slot, chunk_id, future)
        except Exception as exc:  # the client is closing
            self._results.put((slot, chunk_id, future, None, exc))

    async def _fetch(self, slot: int, chunk_id: int, future: Any) -> None:
        """On the client's event loop: fetch a lane's result, then queue its report."""
        try:
            outcome = await self._client.gather(future, asynchronous=True)
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
        killed = getattr(_distributed(), "KilledWorker", ())
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
            self._ready(slot)
        else:
            self._halts.start([future], slot)

    def _ready(self, slot: int) -> None:
        with self._lock:
            stopping = self._stopping
        if not stopping:
            self._events.worker_ready(slot)

    def _keep_own_cluster_whole(self) -> None:
        """Start again the workers that this engine's own LocalCluster gave up on.

        A LocalCluster closes a worker's nanny for good when, ``distributed.deploy.
        lost-worker-timeout`` (15 s) after that worker left, no worker of its name is
        there: so when a worker is ended again just then (a timeout 15 s after another)
        it is not replaced, and a cluster of one worker is left with none."""
        cluster = self._cluster
        if cluster is not None and len(cluster.workers) < self.workers:
            with contextlib.suppress(Exception):  # closing: nothing to keep
                cluster.scale(self.workers)

    def restart(self, slot: int) -> None:
        """Lanes hold no worker of their own to recycle: the slot is ready again."""
        self._events.worker_ready(slot)


def _in_dask_task(distributed: Any) -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


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
