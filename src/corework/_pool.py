"""``Pool``: a ``concurrent.futures.Executor`` over any engine, plus ``imap`` and ``starmap``."""

from __future__ import annotations

import concurrent.futures
import copy
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from ._future import Future
from ._mapjob import Errors, MapJob, parse_errors
from ._outcomes import Outcome
from ._policy import _UNSET, TaskPolicy
from ._scheduler import Scheduler
from ._transport import CallKind
from .engines import (
    Prober,
    WorkerSetup,
    create_engine,
    default_workers,
    resolve_engine_name,
)

__all__ = ["Pool"]

T = TypeVar("T")

#: Schedulers of pools not yet shut down (with wait): the end of the program waits for
#: their work, as concurrent.futures does — also for pools dropped without shutdown().
_live: set[Scheduler] = set()
_live_lock = threading.Lock()


class _Handle:
    """What a pool and its :meth:`Pool.options` views share: when the last of them is
    gone, no more work can come, so the pool finishes what it has and stops (a pool
    dropped without ``shutdown()`` never keeps the program from exiting)."""

    def __init__(self, scheduler: Scheduler) -> None:
        weakref.finalize(self, scheduler.shutdown, wait=False).atexit = False


def parse_chunksize(chunksize: int | Literal["auto"], name: str = "chunksize") -> int | None:
    """``"auto"`` -> None (adaptive); a positive int as is; anything else is an error."""
    if chunksize == "auto" and name == "chunksize":
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        allowed = "a positive int or 'auto'" if name == "chunksize" else "a positive int"
        raise ValueError(f"{name} must be {allowed}, not {chunksize!r}")
    return chunksize


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tb": 10**12, "tib": 2**40}


def parse_memory(limit: int | str | None) -> int | None:
    """Bytes from ``2_000_000_000``, ``"2GiB"``, ``"512 MB"`` or ``"1.5g"``."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(limit))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"memory_limit must be a positive number of bytes or a size such "
                         f"as '2GiB' or '512MB', not {limit!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def _authkey(engine: str) -> bytes | None:
    """This process's multiprocessing authkey, for process workers (cheap to get)."""
    if engine != "process":
        return None
    import multiprocessing.process

    return bytes(multiprocessing.process.current_process().authkey)


def parse_threads(threads: int | None) -> int:
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, not {threads!r}")
    return threads


def parse_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or None, not {workers!r}")
    return workers


def _native_threads(native_threads: int | Literal["auto"] | None, workers: int) -> int | None:
    if native_threads == "auto":
        return max(1, default_workers() // workers)
    if native_threads is not None and (not isinstance(native_threads, int)
                                       or native_threads < 1):
        raise ValueError(
            f"native_threads must be a positive int, 'auto' or None, not {native_threads!r}"
        )
    return native_threads


class Pool(concurrent.futures.Executor):
    """A pool of workers on one engine; a drop-in ``concurrent.futures.Executor``.

    ``engine`` is ``"process"``, ``"thread"``, ``"interpreter"``, ``"dask"`` or ``"auto"``
    (worker processes: a task that crashes costs that task, never this program).
    ``threads`` (process engine) runs that many task threads in each worker process: for
    tasks that wait (I/O) or run native code, still isolated from the caller; a process
    that dies with several tasks in it has each of them re-run alone before one is
    blamed. ``native_threads`` caps the
    BLAS/OpenMP thread pools in each process worker (``"auto"``: cores // workers, so the
    pool never oversubscribes the machine; None: leave them alone).
    ``start_method`` (process engine) is ``"fork"`` (workers forked from corework's
    single-threaded launcher, the default) or ``"spawn"`` (fresh interpreters).

    ``address`` (engine ``"dask"``) is a Dask scheduler's, e.g. ``"tcp://host:8786"``;
    without it the dask engine starts a ``LocalCluster`` of ``workers`` processes.

    ``timeout``, ``retries``, ``backoff`` and ``retry_on`` apply to every task (see
    :meth:`options` to change them for some): a task running past ``timeout`` seconds
    fails with ``TaskTimeout`` and its worker is replaced; a task that crashed its worker
    or timed out (or raised one of ``retry_on``) runs again up to ``retries`` times.
    """

    def __init__(self, workers: int | None = None, *, engine: str = "auto",
                 timeout: float | None = None, retries: int = 0, backoff: float = 0.0,
                 retry_on: Iterable[type[BaseException]] = (),
                 memory_limit: int | str | None = None,
                 max_tasks_per_worker: int | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), start_method: str | None = None,
                 native_threads: int | Literal["auto"] | None = "auto",
                 address: str | None = None, threads: int | None = None,
                 _prober: Prober | None = None, _thread_names: str | None = None) -> None:
        count = parse_workers(workers)
        self._policy = TaskPolicy(timeout, retries, backoff, tuple(retry_on))
        self.engine = resolve_engine_name(engine)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, not {type(initializer).__name__}")
        if start_method is not None and self.engine != "process":
            raise ValueError(f"start_method applies to engine='process', not {self.engine!r}")
        per_worker = parse_threads(threads)
        if max_tasks_per_worker is not None:
            parse_chunksize(max_tasks_per_worker, "max_tasks_per_worker")
            if per_worker > 1 or _prober is not None:
                raise ValueError("max_tasks_per_worker needs one task thread per worker "
                                 "process (threads=None): a process is recycled between "
                                 "tasks, which threads would share")
        setup = WorkerSetup(initializer, tuple(initargs),
                            _native_threads(native_threads, count * per_worker), per_worker,
                            elastic=_prober is not None, authkey=_authkey(self.engine),
                            thread_names=_thread_names)
        # engine="dask": the scheduler's address, and its own checks (see engines/dask.py)
        if address is not None and self.engine != "dask":
            raise ValueError(f"address applies to engine='dask', not {self.engine!r}")
        cluster: dict[str, Any] = {} if self.engine != "dask" else {
            "address": address, "sized": workers is not None,
            "max_tasks_per_worker": max_tasks_per_worker}
        if _prober is not None:
            cluster["prober"] = _prober
        engine_ = create_engine(self.engine, count, setup, start_method,
                                parse_memory(memory_limit), **cluster)
        self._scheduler = Scheduler(engine_, self._policy, max_tasks_per_worker)
        self._shutdown_lock = threading.Lock()
        self._handle = _Handle(self._scheduler)
        with _live_lock:
            _live.add(self._scheduler)

    @property
    def workers(self) -> int:
        """How many workers (processes, threads, sub-interpreters, Dask lanes) it has."""
        return self._scheduler.workers

    @property
    def threads(self) -> int:
        """Task threads per worker process (1 but with ``threads=``, or once ``cw.map`` on
        ``engine="auto"`` saw its tasks wait); ``workers * threads`` run at once."""
        return self._scheduler.slots // max(1, self._scheduler.workers)

    def options(self, *, timeout: Any = _UNSET, retries: Any = _UNSET, backoff: Any = _UNSET,
                retry_on: Any = _UNSET) -> Pool:
        """This pool, with other per-task limits for the work submitted through the result:
        ``pool.options(timeout=5).submit(fn, x)``. It shares this pool's workers (and
        shutting it down shuts this pool down)."""
        view = copy.copy(self)
        view._policy = self._policy.with_(timeout, retries, backoff, retry_on)
        return view

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)``; returns a ``concurrent.futures.Future`` (with a
        ``kill()`` that stops the task even while it runs).

        Arguments that cannot be sent to a worker raise ``SerializationError`` here.
        """
        return self._scheduler.submit_call(fn, args, kwargs, self._policy)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator[T]:
        """Exactly ``Executor.map`` (Python 3.14's, on every Python): the work is submitted
        now, results come in order, from a generator whose ``close()`` (or dropping it)
        cancels what has not started.

        ``timeout`` counts from this call; past it, ``next()`` raises ``TimeoutError``.
        ``buffersize``: read the inputs lazily, keeping at most that many chunks submitted
        ahead of the results taken — bounded memory over huge or endless inputs.
        """
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        if isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        calls: Iterable[Any] = zip(*iterables, strict=False)  # stop at the shortest
        if buffersize is None:
            calls = list(calls)  # read now, as Executor.map does
        job = MapJob(self._scheduler, fn, calls, kind=CallKind.STAR,
                     chunksize=parse_chunksize(chunksize), timeout=timeout,
                     window=sys.maxsize if buffersize is None else buffersize,
                     policy=self._policy)
        job.fill()
        return _results(job)

    def imap(self, fn: Callable[[Any], T], iterable: Iterable[Any], *, ordered: bool = True,
             chunksize: int | Literal["auto"] = "auto", errors: Errors = "raise"
             ) -> Iterator[Any]:
        """Lazily map ``fn`` over ``iterable``; ``ordered=False`` yields results as done.

        ``errors`` is as for :func:`corework.map`: ``"raise"`` ends the iteration at the
        first failed task, ``"return"`` yields its exception in its place and goes on,
        ``"outcome"`` yields a :class:`corework.Outcome` for every item.
        """
        return iter(self._job(fn, iterable, CallKind.ARG, ordered=ordered, chunksize=chunksize,
                             errors=errors))

    def _map_chunks(self, fn: Callable[[Any], T], iterable: Iterable[Any], *, ordered: bool,
                    chunksize: int | Literal["auto"], errors: Errors = "raise"
                    ) -> Iterator[list[Any]]:
        """``imap`` a chunk's results at a time (for ``cw.map``, which wants a list)."""
        return self._job(fn, iterable, CallKind.ARG, ordered=ordered, chunksize=chunksize,
                             errors=errors).chunks()

    def _imap_calls(self, fn: Callable[..., Any],
                    calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]], *,
                    ordered: bool, chunksize: int | Literal["auto"]
                    ) -> Iterator[list[Outcome[Any]]]:
        """``fn(*args, **kwargs)`` for each ``(args, kwargs)``, a chunk of outcomes at a
        time (for ``corework run``, which records every outcome)."""
        return self._job(fn, calls, CallKind.CALL, ordered=ordered, chunksize=chunksize,
                         errors="outcome").chunks()

    def starmap(self, fn: Callable[..., T], iterable: Iterable[Iterable[Any]], *,
                chunksize: int | Literal["auto"] = "auto", errors: Errors = "raise"
                ) -> list[Any]:
        """``[fn(*args) for args in iterable]``, in parallel; ``errors`` as for ``imap``."""
        return list(self._job(fn, iterable, CallKind.STAR, ordered=True,
                              chunksize=chunksize, errors=errors))

    def _job(self, fn: Callable[..., Any], iterable: Iterable[Any], kind: CallKind, *,
             ordered: bool, chunksize: int | Literal["auto"], errors: Errors) -> MapJob:
        return MapJob(self._scheduler, fn, iterable, kind=kind,
                      chunksize=parse_chunksize(chunksize), ordered=ordered,
                      policy=self._policy, errors=parse_errors(errors))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work. With ``wait``, return when all submitted work is done and
        the workers are gone; ``cancel_futures`` drops work that has not started.

        Without ``wait`` the work submitted still runs, and the end of the program waits
        for it, as ``concurrent.futures`` promises. A second call returns at once."""
        with self._shutdown_lock:
            self._scheduler.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            _forget(self._scheduler)

    def kill(self) -> None:
        """Stop now: cancel pending work, stop running tasks (killing process workers)."""
        self._stop_now("cancelled by Pool.kill()")

    def kill_workers(self) -> None:
        """Python 3.14's name for :meth:`kill`: pending work is cancelled, running tasks
        are stopped (process workers get SIGKILL), and the pool takes no more work."""
        self._stop_now("stopped by Pool.kill_workers()")

    def terminate_workers(self) -> None:
        """As :meth:`kill_workers`, but process workers get SIGTERM (a task may clean up
        in a signal handler of its own); Python 3.14's ``ProcessPoolExecutor`` API."""
        self._stop_now("stopped by Pool.terminate_workers()", gently=True)

    def _stop_now(self, reason: str, *, gently: bool = False) -> None:
        with self._shutdown_lock:
            self._scheduler.terminate(reason, gently=gently)
        _forget(self._scheduler)

    def _pids(self) -> list[int]:
        """Live worker process ids (process engine), for ``Process`` and tests."""
        return list(getattr(self._scheduler.engine, "worker_pids", list)())

    def _exit_codes(self) -> dict[int, int | None]:
        """Exit codes of the workers reaped at shutdown (process engine)."""
        return dict(getattr(self._scheduler.engine, "exit_codes", {}))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.kill()  # Ctrl-C: don't make the user wait for running tasks
        else:
            self.shutdown(wait=True)
        return False

    def __repr__(self) -> str:
        threads = f" threads={self.threads}" if self.threads > 1 else ""
        return f"<corework.Pool engine={self.engine!r} workers={self.workers}{threads}>"


def _results(job: MapJob) -> Iterator[Any]:
    """``Pool.map``'s generator: its ``finally`` cancels what has not started."""
    try:
        yield from job
    finally:
        job.cancel()


def _forget(scheduler: Scheduler) -> None:
    with _live_lock:
        _live.discard(scheduler)


_exiting = threading.Event()


def exiting() -> bool:
    """Whether the end of the program has begun shutting pools down."""
    return _exiting.is_set()


def _shutdown_live_pools() -> None:
    _exiting.set()
    with _live_lock:
        schedulers = list(_live)
    for scheduler in schedulers:
        scheduler.shutdown(wait=True)
        _forget(scheduler)


def _forget_live_pools() -> None:
    """In a forked child: the parent's pools are not this process's to finish."""
    global _live_lock
    _live.clear()
    _live_lock = threading.Lock()


# Like concurrent.futures: finish pools when the main thread ends, before ``atexit``
# handlers run (the process launcher's own exit handler must come after this).
threading._register_atexit(_shutdown_live_pools)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_live_pools)
