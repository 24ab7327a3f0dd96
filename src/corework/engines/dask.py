"""The dask engine: the same API on a Dask ``distributed`` cluster.

::

    scheduler ── send(slot, chunk) ──▶ client.submit(_run, ...) ──▶ Dask scheduler ──▶ a worker
        ▲                              (one Dask task per chunk)                          │
        └── chunk_done / worker_lost ◀── done callback (Dask's callback thread) ◀─────────┘

Each slot is a *lane*: at most one Dask future in flight, running one whole chunk with
:func:`~corework.engines._runner.run_chunk`. So corework's scheduler keeps doing what it
does on every engine — chunking, ordering, deadlines, retries — and Dask does what it is
good at: placing tasks on workers, moving data, restarting workers, its dashboard.
``workers`` is the number of lanes (default: the cluster's threads when the pool starts).

How corework's promises map onto Dask (the README's "On a cluster" says the same):

* **Worker loss** (a worker process dies): Dask itself re-runs the task elsewhere,
  transparently; that is the cluster's own retry and corework does not count it. A task
  that keeps killing workers (``distributed.scheduler.allowed-failures`` + 1 deaths)
  reaches corework as ``WorkerCrashed``; from then on corework's ``retries`` apply (a
  chunk is split to find the task to blame, as on the process engine). Dask's own
  ``retries=`` (re-run on an exception) is not used: corework's ``retries``/``retry_on``
  are.
* **Timeouts and Future.kill()**: Dask cannot interrupt a running Python function, but
  its nanny replaces a worker process that ends. In the background the task is
  cancelled, every worker is told never to start it, and the worker process running it
  is ended (its nanny starts a new one); the lane is ready again once that worker is
  back. Dask re-runs elsewhere whatever else that worker held, as for any lost worker,
  but never the stopped task (see ``DaskEngine._stop_tasks``). A worker without a
  nanny (``dask worker --no-nanny``) is not ended: the task then runs on there until it
  finishes, and a warning is logged. A task's timeout counts from when corework hands it
  to Dask, so on a busy shared cluster it includes the time the task waits for a worker
  thread.
* **Arguments**: Dask pickles task arguments into the task graph, which goes through the
  scheduler. Buffers of 1 MiB or more (numpy arrays, bytes in memoryviews) are scattered
  to the workers instead, straight from the caller, and the task refers to them; a
  ``cw.share`` is scattered once per pool with ``broadcast=True`` (cached by share id, and
  dropped when the caller lets go of it), whatever its size, and reaches tasks read-only.
  A writable share cannot work across machines (tasks would write into their own copy)
  and is refused with a clear error.
* **initializer**: runs in a worker process before the first chunk of this pool that
  process runs (so also in workers that join later or were restarted); it travels once,
  scattered. If it raises, the pool is broken with ``InitializerFailed``.
* **Not supported**: ``memory_limit`` (Dask workers have their own: ``dask worker
  --memory-limit``), ``max_tasks_per_worker`` and ``start_method``: a clear ``ValueError``.
  ``native_threads`` is left to Dask, whose nanny already sets ``OMP_NUM_THREADS=1``.

Workers must be able to import corework (and whatever the task functions import), as for
any Dask library. A task that itself uses ``engine="dask"`` runs on its own worker's
cluster, and secedes from the worker's thread pool while it waits (as
``distributed.worker_client()`` does). Without ``address`` (and with no Dask
``scheduler-address`` configured, e.g. ``DASK_SCHEDULER_ADDRESS``) the engine starts a
``LocalCluster`` of ``workers`` single-threaded worker processes on 127.0.0.1 and closes
it at shutdown; Dask starts its workers with ``spawn``, so a script needs the usual
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import (
    Cancelled,
    CoreworkError,
    InitializerFailed,
    SerializationError,
    WorkerCrashed,
)
from ..transport import segments as _segments
from ..transport.failure import Failure
from ..transport.main_namespace import run_initializer
from ..transport.picklers import dumps_by_reference, dumps_by_value
from ._base import CallKind, ChunkReport, ChunkWork, Engine, EngineEvents, FunctionRef, WorkerSetup
from ._runner import run_chunk
from ._unpicklable import fail_all, replace_unpicklable

__all__ = ["DaskEngine", "check_options"]

#: Buffers at least this big are scattered to the workers rather than put in the task
#: graph (which goes through the scheduler). Smaller ones are cheaper inline than one
#: more round trip.
SCATTER_BYTES = 1 << 20
#: How long a pool given no ``workers`` waits for the scheduler to have a worker (its
#: thread count sizes the pool).
WORKERS_WAIT_SECONDS = 60.0
#: How long restarting a worker (to stop a task) may take before it is given up.
RESTART_SECONDS = 60.0
#: How often the scheduler is asked whether a worker ended by kill() has been replaced.
RESTART_POLL_SECONDS = 0.05
#: Task functions a worker process keeps unpickled, per pool; older ones are unpickled again.
FUNCTIONS_PER_WORKER = 32

_INSTALL = "engine='dask' needs Dask's distributed package: pip install 'corework[dask]'"

log = logging.getLogger("corework.dask")


def _distributed() -> Any:
    """The ``distributed`` module, imported on first use (corework does not need it)."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return distributed


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


# ----------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class _Args:
    """A chunk's items pickled here: ``data``, and its out-of-band buffers as ``refs``,
    each ``(scattered data, offset, length, read-only)``; Dask puts the data in place
    of each future before the task runs."""

    data: bytes
    refs: tuple[tuple[Any, int, int, bool], ...] = ()


class _SetupFailed:
    """What a task returns when this pool's initializer raised in its worker."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure


class _Result:
    """A chunk's report as pickled in the worker: corework's pickling (memoryviews
    included), its buffers out of band so Dask sends them as frames, not copies."""

    def __init__(self, chunk_id: int, seconds: float, data: bytes,
                 buffers: list[pickle.PickleBuffer]) -> None:
        self.chunk_id = chunk_id
        self.seconds = seconds
        self.data = data
        self.buffers = buffers

    @classmethod
    def of(cls, report: ChunkReport) -> _Result:
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = dumps_by_reference((report.results, report.failures, report.error), buffers)
        except Exception:
            replace_unpicklable(report)  # a result that can't be pickled fails its task only
            data = dumps_by_reference((report.results, report.failures, report.error), buffers)
        return cls(report.chunk_id, report.seconds, data, buffers)

    def __reduce__(self) -> tuple[Any, ...]:
        raws = [buffer.raw() for buffer in self.buffers]
        return (_Result, (self.chunk_id, self.seconds, self.data, raws))

    def report(self) -> ChunkReport:
        """Unpickled here, in the caller."""
        results, failures, error = pickle.loads(
            self.data, buffers=[bytearray(b) if isinstance(b, bytes) else b
                                for b in self.buffers])
        return ChunkReport(self.chunk_id, results, failures, self.seconds, error, True)


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
        self._shares: dict[str, Any] = {}  # share id -> the share scattered (a future)
        self._released: deque[str] = deque()  # shares the caller let go of (from the GC)
        self._stopping = False
        self._halts: list[threading.Thread] = []  # restarting workers to stop tasks
        self._closer: threading.Thread | None = None
        #: Finished lanes, as (slot, chunk id, future, outcome, error); None ends it.
        self._results: queue.SimpleQueue[tuple[int, int, Any, Any, BaseException | None]
                                         | None] = queue.SimpleQueue()
        self._reporter = threading.Thread(target=self._report_results,
                                          name="corework-dask-results", daemon=True)
        self._cluster: Any = None
        self._client: Any = None
        self._setup_data: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, events: EngineEvents) -> None:
        self._events = events
        distributed = _distributed()
        self._reporter.start()
        try:
            self._connect(distributed)
            if self.setup.initializer is not None:
                blob = _dumps(self.setup, f"the initializer {self.setup.initializer!r} "
                                          "or its initargs")
                self._setup_data = self._client.scatter(blob, broadcast=True, hash=False)
        except BaseException:
            self._close()
            raise
        _segments.on_release(self._share_released)
        for slot in range(self.workers):
            events.worker_ready(slot)

    def _connect(self, distributed: Any) -> None:
        import dask

        address = self.address or dask.config.get("scheduler-address", None)
        if address is None and _in_dask_task(distributed):
            # A task using corework: run on its own cluster, and let its worker run other
            # tasks while this one's thread waits for results (as worker_client() does).
            address = distributed.get_worker().scheduler.address
            distributed.secede()
        if address is None:
            # No dashboard; the scheduler's HTTP server (it has one anyway) on a free
            # port, not 8787, which another Dask scheduler here may have taken.
            self._cluster = distributed.LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            address = self._cluster.scheduler_address
        try:
            self._client = distributed.Client(address, set_as_default=False)
        except OSError as exc:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {address}: {exc}. Start one with "
                f"`dask scheduler` and workers with `dask worker {address}`") from exc
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
            self._halt(running)  # no slot to make ready: the pool is stopping
        if closer is not None:
            closer.start()
        # Not from the results thread (a done-callback's Pool.kill): the closer waits
        # for that thread to end.
        if wait and threading.current_thread() not in (self._closer, self._reporter):
            self._closer.join()

    def _close(self) -> None:
        for halt in list(self._halts):
            halt.join(RESTART_SECONDS)
        with self._lock:
            shares = list(self._shares.values())
            self._shares.clear()
        del shares  # released before the client goes
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._results.put(None)
        if self._reporter.is_alive() and self._reporter is not threading.current_thread():
            self._reporter.join()

    # ------------------------------------------------------------------ sending

    def prepare(self, fn: Callable[..., Any], fn_id: int) -> FunctionRef:
        return FunctionRef(fn_id, fn, _dumps(fn, f"the function {fn!r}"))

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        """Pickle the items; their large buffers and shares are scattered, not inlined."""
        found: list[tuple[memoryview, tuple[_segments.Share, Any, int] | None]] = []

        def collect(buffer: pickle.PickleBuffer) -> bool:
            try:
                raw = buffer.raw()
            except BufferError:  # not contiguous: pickle copies it inline
                return True
            share = None
            if raw.nbytes and _segments.have_shares():
                share = _segments.find(_segments.address_of(raw), raw.nbytes)
            if share is None and raw.nbytes < SCATTER_BYTES:
                return True
            found.append((raw, share))
            return False

        try:
            data = dumps_by_value(list(items), collect)
        except Exception as exc:
            position = next((at for at, item in enumerate(items) if not _picklable(item)), None)
            where = describe(position) if position is not None else "a task"
            raise SerializationError(
                f"cannot send the arguments of {where} to a Dask worker: {exc}. Pass "
                "picklable arguments (or create the object inside the task), or use "
                "engine='thread'.", stage="pickle-argument", original=exc) from exc
        return _Args(data, self._place(found, describe))

    def _place(self, found: list[tuple[memoryview, tuple[_segments.Share, Any, int] | None]],
               describe: Callable[[int], str]) -> tuple[tuple[Any, int, int, bool], ...]:
        """Where each out-of-band buffer is on the cluster: a share (scattered once to
        every worker) or a large buffer of this chunk's own (scattered now)."""
        if not found:
            return ()
        self._forget_released()
        own = [raw for raw, share in found if share is None]
        scattered = iter(self._client.scatter(own, hash=False) if own else [])
        refs = []
        for raw, share in found:
            if share is None:
                refs.append((next(scattered), 0, raw.nbytes, False))
                continue
            record, mapping, offset = share
            if record.writable:
                raise SerializationError(
                    f"a writable cw.share() cannot be written by tasks on a Dask cluster "
                    f"(each worker has its own copy, so the caller would not see the "
                    f"writes), as {describe(0)} would: return the values from the tasks "
                    "instead, or use engine='process' or 'thread'", stage="pickle-argument")
            refs.append((self._scattered_share(record, mapping), offset, raw.nbytes, True))
        return tuple(refs)

    def _scattered_share(self, share: _segments.Share, mapping: Any) -> Any:
        with self._lock:
            future = self._shares.get(share.id)
        if future is None:
            future = self._client.scatter(memoryview(mapping), broadcast=True, hash=False)
            with self._lock:
                future = self._shares.setdefault(share.id, future)
        return future

    def _share_released(self, share_id: str) -> None:
        """A share died in the caller (called by the garbage collector: no locks here)."""
        self._released.append(share_id)

    def _forget_released(self) -> None:
        """Drop the cluster's copies of the shares the caller let go of."""
        with self._lock:
            while self._released:
                self._shares.pop(self._released.popleft(), None)

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

    # ------------------------------------------------------------------ receiving

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
            self._events.engine_broken(_initializer_error(self.setup, outcome.failure))
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

    # ------------------------------------------------------------------ stopping tasks

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
            self._halt([future], slot)

    def _ready(self, slot: int) -> None:
        with self._lock:
            stopping = self._stopping
        if not stopping:
            self._events.worker_ready(slot)

    def _halt(self, futures: list[Any], slot: int | None = None) -> None:
        """In the background: stop the tasks of ``futures``; then ``slot`` is ready."""
        halt = threading.Thread(target=self._stop_tasks, args=(futures, slot),
                                name="corework-dask-halt", daemon=True)
        with self._lock:
            self._halts = [thread for thread in self._halts if thread.is_alive()]
            self._halts.append(halt)
        halt.start()

    def _stop_tasks(self, futures: list[Any], slot: int | None) -> None:
        """Make sure the tasks of ``futures`` run nowhere, now or later; then ``slot``
        is ready (once the worker processes ended for it are replaced).

        Dask re-runs the tasks of a worker that dies on another one, and a hung task
        re-run there would wedge that worker's thread for good, unseen: its event loop
        still answers, so Dask takes it for healthy and gives it more tasks, which never
        start. And ``Client.cancel`` only queues a message, so it may reach the
        scheduler after the worker's death. Hence, in this order:

        1. tell every worker that these tasks are stopped, and ask which runs one now
           (``_run`` and ``_stop_keys`` take one lock, so a worker either reports the
           task or never starts it: a re-run Dask hands it is skipped);
        2. end the worker processes that run one (their nannies start new ones at once),
           while the scheduler still counts them busy, so it gives them nothing new;
        3. cancel the tasks, and wait until the scheduler has forgotten them: from then
           on no worker is given them;
        4. ask the workers that joined since step 1 (a replacement, say: one may have
           been given a task before the cancel arrived), and end any that runs one.
           (Not the others: they were told, and asking a worker that is being ended
           would wait for Dask's connect timeout, 30 s.)

        Ending the process, rather than Dask's graceful ``restart_workers``, takes
        milliseconds instead of seconds: a worker whose thread is stuck in a task cannot
        close gracefully anyway. Every step is bounded by ``RESTART_SECONDS`` in all."""
        keys = sorted({future.key for future in futures})
        deadline = time.monotonic() + RESTART_SECONDS
        try:
            asked, ended, count = self._end_runners(keys, deadline)
            self._client.cancel(futures, force=True)
            self._await_forgotten(keys, deadline)
            joined = set(self._client.scheduler_info(n_workers=-1)["workers"]) - asked
            if joined:
                ended |= self._end_runners(keys, deadline, sorted(joined))[1]
            if ended:
                self._await_replacements(ended, count, deadline)
        except Exception as exc:
            log.warning("corework could not stop the Dask tasks %s (they may run on until "
                        "they end): %s", keys, exc)
        finally:
            if slot is not None:
                self._ready(slot)

    def _end_runners(self, keys: list[str], deadline: float,
                     workers: list[str] | None = None) -> tuple[set[str], set[str], int]:
        """Tell ``workers`` (default: every worker) that ``keys`` are stopped; end those
        that run one. Returns the workers asked, those ended, and how many answered."""
        answers = self._client.run(_stop_keys, keys, workers=workers, on_error="return",
                                   callback_timeout=_left(deadline))
        told = {worker: answer for worker, answer in answers.items()
                if isinstance(answer, tuple)}
        doomed = {worker for worker, (runs, nanny) in told.items() if runs and nanny}
        orphans = sorted(worker for worker, (runs, nanny) in told.items() if runs and not nanny)
        deaf = sorted(set(answers) - set(told))
        if doomed:  # the connections reset as they end: errors are expected
            self._client.run(_end_worker, workers=sorted(doomed), wait=False,
                             on_error="ignore", callback_timeout=_left(deadline))
        if orphans:
            log.warning("corework cannot stop tasks %s on Dask workers without a nanny "
                        "(%s): they run on until they end", keys, orphans)
        if deaf:
            log.warning("corework could not tell the Dask workers %s to stop tasks %s "
                        "(they may run on there until they end)", deaf, keys)
        # As many as answered: one that did not may be on its way out.
        return set(answers), doomed, len(told)

    def _await_forgotten(self, keys: list[str], deadline: float) -> None:
        """Wait until the Dask scheduler knows none of ``keys`` (their cancel arrived)."""
        while True:
            try:
                known = self._client.run_on_scheduler(_known_keys, keys,
                                                      callback_timeout=_left(deadline))
            except Exception as exc:  # e.g. a scheduler that runs no functions
                log.debug("corework cannot ask the Dask scheduler about %s: %s", keys, exc)
                return  # the workers there now are told; a re-run elsewhere is possible
            if not known:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the Dask scheduler did not drop them within "
                                   f"{RESTART_SECONDS:g} s")
            time.sleep(RESTART_POLL_SECONDS)

    def _await_replacements(self, gone: set[str], count: int, deadline: float) -> None:
        """Wait until the scheduler has dropped ``gone`` and has ``count`` workers again."""
        while time.monotonic() < deadline:
            with self._lock:
                if self._stopping:
                    return
            self._keep_own_cluster_whole()
            workers = set(self._client.scheduler_info(n_workers=-1)["workers"])
            if not workers & gone and len(workers) >= count:
                return
            time.sleep(RESTART_POLL_SECONDS)

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


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (a little at least: a call that has none fails fast)."""
    return max(0.1, deadline - time.monotonic())


def _known_keys(keys: list[str], dask_scheduler: Any) -> list[str]:
    """Run on the Dask scheduler: which of ``keys`` it still knows."""
    return [key for key in keys if key in dask_scheduler.tasks]


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


def _picklable(item: Any) -> bool:
    try:
        dumps_by_value(item)
    except Exception:
        return False
    return True


def _failed(chunk_id: int, exc: BaseException) -> ChunkReport:
    """A chunk none of whose tasks could run (so the scheduler splits it, or fails it)."""
    return ChunkReport(chunk_id, [], {}, 0.0, Failure.capture(exc), True)


def _initializer_error(setup: WorkerSetup, failure: Failure) -> InitializerFailed:
    error = InitializerFailed(
        f"the initializer {setup.initializer!r} raised in a Dask worker: "
        f"{failure.type_name}: {failure.message}. No task can run in this pool.")
    if failure.exc is not None:
        error.__cause__ = failure.exc
    return error


# ----------------------------------------------------------------------------- the worker
#
# Module state, in each Dask worker process (a cache, keyed by pool): which pools'
# initializers ran here and how, and the task functions already unpickled.

_worker_lock = threading.Lock()
_initialized: dict[str, Failure | None] = {}  # pool token -> the initializer's failure
_functions: OrderedDict[tuple[str, int], Callable[..., Any]] = OrderedDict()
#: Which tasks run in this process, and which were stopped (see ``_stop_keys``). Their
#: lock is never held for long: the worker's event loop takes it.
_keys_lock = threading.Lock()
_running_keys: set[str] = set()
_stopped_keys: OrderedDict[str, None] = OrderedDict()
#: Stopped task keys a worker process remembers; a stopped task reaches a worker, if at
#: all, within moments of being stopped, so only the latest matter.
STOPPED_KEYS_KEPT = 4096


def _run(key: str, pool: tuple[str, bytes | None], function: tuple[int, bytes],
         chunk: tuple[int, int, bytes, list[tuple[Any, int, int, bool]]]
         ) -> _Result | ChunkReport | _SetupFailed:
    """One chunk, in a Dask worker: set the pool up here if need be, then run it.

    ``key``: the Dask task's own; ``pool``: its token and setup; ``function``: its id
    and pickle; ``chunk``: its id, call kind, pickled items and their buffers (Dask has
    put scattered data in place)."""
    chunk_id = chunk[0]
    with _keys_lock:
        if key in _stopped_keys:  # stopped before it started here: it must not run
            return ChunkReport(chunk_id, [], {}, 0.0, Failure.capture(
                Cancelled("the task was stopped before it started")))
        _running_keys.add(key)
    try:
        return _run_chunk(pool, function, chunk)
    finally:
        with _keys_lock:
            _running_keys.discard(key)


def _run_chunk(pool: tuple[str, bytes | None], function: tuple[int, bytes],
               chunk: tuple[int, int, bytes, list[tuple[Any, int, int, bool]]]
               ) -> _Result | ChunkReport | _SetupFailed:
    token, setup = pool
    fn_id, fn_blob = function
    chunk_id, kind, data, refs = chunk
    failure = _initialize(token, setup)
    if failure is not None:
        return _SetupFailed(failure)
    try:
        fn = _function(token, fn_id, fn_blob)
    except BaseException as exc:  # e.g. a module the function needs is missing here
        return fail_all(chunk_id, exc, "function")
    try:
        items = pickle.loads(data, buffers=[_buffer(*ref) for ref in refs])
    except BaseException as exc:  # e.g. a class the worker cannot import
        return fail_all(chunk_id, exc, "arguments")
    return _Result.of(run_chunk(chunk_id, fn, CallKind(kind), items))


def _initialize(token: str, setup: bytes | None) -> Failure | None:
    """Run the pool's initializer once in this process; its failure, if it raised."""
    if setup is None:
        return None
    with _worker_lock:  # a worker with several threads runs it once
        if token not in _initialized:
            _initialized[token] = None
            try:
                options: WorkerSetup = pickle.loads(setup)
                if options.initializer is not None:
                    run_initializer(options.initializer, options.initargs)
            except Exception as exc:
                _initialized[token] = Failure.capture(exc)
        return _initialized[token]


def _function(token: str, fn_id: int, blob: bytes) -> Callable[..., Any]:
    key = (token, fn_id)
    with _worker_lock:
        known = _functions.get(key)
        if known is not None:
            _functions.move_to_end(key)
            return known
    fn: Callable[..., Any] = pickle.loads(blob)
    with _worker_lock:
        _functions[key] = fn
        while len(_functions) > FUNCTIONS_PER_WORKER:
            _functions.popitem(last=False)
    return fn


async def _stop_keys(keys: list[str], dask_worker: Any = None) -> tuple[bool, bool]:
    """Run by ``Client.run`` on the event loop of every worker (a coroutine, so that it
    runs even while the worker's task threads are busy): these tasks must not start here
    from now on. Returns whether one of them runs here now, and whether this worker has
    a nanny (that would replace it, were it ended)."""
    with _keys_lock:
        for key in keys:
            _stopped_keys[key] = None
            _stopped_keys.move_to_end(key)
        while len(_stopped_keys) > STOPPED_KEYS_KEPT:
            _stopped_keys.popitem(last=False)
        running = not _running_keys.isdisjoint(keys)
    return running, getattr(dask_worker, "nanny", None) is not None


async def _end_worker() -> None:
    """Run by ``Client.run`` on the event loop of a worker whose task must stop (a
    coroutine, so that it runs even while the worker's task thread is busy): its nanny
    replaces it."""
    os._exit(1)


def _buffer(data: Any, offset: int, nbytes: int, readonly: bool) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    view = view[offset:offset + nbytes]
    return view.toreadonly() if readonly else view

