"""A joblib parallel backend named ``"corework"``: scikit-learn's ``n_jobs`` on corework.

``import corework.joblib`` registers it (:func:`register` does it again, explicitly)::

    import joblib
    import corework.joblib

    with joblib.parallel_config(backend="corework", n_jobs=2, retries=1):
        search.fit(X, y)  # GridSearchCV's fits run on corework's worker processes

Each joblib batch is one corework task on a :class:`corework.Pool` of worker processes
that is kept from one ``Parallel`` call to the next while their shape (``n_jobs``, the
pool's options, the caller's environment and working directory) stays the same, as
loky's reusable executor is: a scikit-learn search starts its workers once. The pool
ends at interpreter exit, when a call asks for another shape, or with :func:`shutdown`.
A call with ``n_jobs=1`` runs in the caller, in order, as with joblib's own backends.
Tiny tasks are batched as joblib's own process backend batches
them (``batch_size="auto"``: batches grow until each takes a fraction of a second).
A batch that crashes its worker costs that batch (joblib sees
:class:`corework.WorkerCrashed`, or with ``retries`` the batch runs again) and the pool
goes on with a fresh worker; ``timeout`` (seconds per batch) fails a
batch that runs too long with :class:`corework.TaskTimeout`. Big arguments (numpy arrays)
travel through shared memory, and :func:`corework.share` objects are sent by reference:
joblib's ``max_nbytes``, ``mmap_mode`` and ``temp_folder`` are accepted and have nothing
to do (no array is written to a temporary file). ``initializer``/``initargs`` (given to
``Parallel`` or ``parallel_config``) set up each worker, as for loky; such a call gets
workers of its own. A ``Parallel(backend="corework")`` inside a task finds the backend
registered in the worker.

joblib's hints are honoured: ``prefer="threads"`` or ``require="sharedmem"`` (as
scikit-learn asks for work that must share the caller's objects, or that releases the
GIL) runs the batches on corework threads in this process. A ``Parallel`` call inside a
task runs on threads (one job unless it asks for more; a call nested deeper,
sequentially), as with joblib's own process backends, and nested numpy work does not
oversubscribe: each worker process caps its BLAS/OpenMP thread pools at
``inner_max_num_threads`` (default: cores // n_jobs).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import joblib
from joblib.parallel import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

from .api.pool import Pool
from .scheduling.future import Future

__all__ = ["JOBLIB_OPTIONS", "NAME", "CoreworkBackend", "register", "shutdown"]

#: The name under which the backend is registered with joblib.
NAME = "corework"


class _Reusable:
    """The process pool kept across ``Parallel`` calls, and the shape it was made for.

    Calls in other threads may be using a pool when a call asks for another shape: a pool
    is shut down only once it is no longer the kept one and its last call has ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._shape: tuple[Any, ...] | None = None
        self._users: dict[Pool, int] = {}  # pool -> calls using it now

    def get(self, shape: tuple[Any, ...], make: Callable[[], Pool]) -> Pool:
        """The kept pool if it has ``shape`` and works, else a new one; counted as used
        by the calling ``Parallel`` call until :meth:`release`."""
        with self._lock:
            pool, old = self._pool, None
            if pool is None or self._shape != shape or not pool._scheduler.accepting:
                old, pool = pool, make()
                self._pool, self._shape = pool, shape
            self._users[pool] = self._users.get(pool, 0) + 1
            idle = old is not None and old not in self._users
        if idle and old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        return pool

    def release(self, pool: Pool) -> None:
        """A call is done with ``pool``; it ends if it is no longer the kept one."""
        with self._lock:
            left = self._users.get(pool, 1) - 1
            if left:
                self._users[pool] = left
                return
            self._users.pop(pool, None)
            if pool is self._pool and pool._scheduler.accepting:
                return
        pool.shutdown(wait=False, cancel_futures=True)

    def __contains__(self, pool: Pool) -> bool:
        """Whether ``pool`` is (or was) a kept pool some call is using."""
        with self._lock:
            return pool is self._pool or pool in self._users

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool, self._shape = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def forget(self) -> None:
        """In a forked child: the parent's pool is not this process's (its threads did
        not come along)."""
        self._lock = threading.Lock()
        self._pool, self._shape, self._users = None, None, {}


_reusable = _Reusable()


def shutdown() -> None:
    """End the worker processes kept for the next ``Parallel`` call (done at exit)."""
    _reusable.shutdown()


atexit.register(shutdown)
os.register_at_fork(after_in_child=_reusable.forget)


class CoreworkBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ``ParallelBackendBase`` over a :class:`corework.Pool`.

    ``engine`` is the pool's for joblib's default (process-preferring) calls:
    ``"process"`` unless said otherwise; calls that prefer threads or require shared
    memory run on ``"thread"``. ``timeout``, ``retries``, ``backoff``, ``retry_on``,
    ``memory_limit``, ``max_tasks_per_worker`` and ``start_method`` are the pool's (see
    :class:`corework.Pool`), given as ``parallel_config(backend="corework", ...)``
    keywords.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_sharedmem = True  # by running on threads when asked to (see configure)
    uses_threads = False

    def __init__(self, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, *, engine: str = "process",
                 timeout: float | None = None, retries: int = 0, backoff: float = 0.0,
                 retry_on: Iterable[type[BaseException]] = (),
                 memory_limit: int | str | None = None,
                 max_tasks_per_worker: int | None = None,
                 start_method: str | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), **joblib_options: Any) -> None:
        _check_joblib_options(joblib_options)
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **joblib_options)
        self._engine = engine
        self._setup: tuple[Callable[..., object] | None, tuple[Any, ...]] = (
            initializer, tuple(initargs))
        self._limits: dict[str, Any] = {
            "timeout": timeout, "retries": retries, "backoff": backoff,
            "retry_on": tuple(retry_on), "memory_limit": memory_limit,
            "max_tasks_per_worker": max_tasks_per_worker}
        self._start_method = start_method
        self._pool: Pool | None = None
        self._shape: tuple[str, int] | None = None  # the pool's (engine, workers)
        self._n_jobs = 1
        self._running: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` as joblib counts it: -1 every core, -2 all but one, and so on."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(int(joblib.cpu_count()) + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(self, n_jobs: int | None = 1, parallel: Any = None,
                  prefer: str | None = None, require: str | None = None,
                  **joblib_options: Any) -> int:
        """Start the pool of one ``Parallel`` call: ``n_jobs`` workers, threads when the
        call prefers them or needs shared memory, each set up by ``initializer``
        (``Parallel``'s own, else the backend's)."""
        initializer = joblib_options.pop("initializer", self._setup[0])
        initargs = tuple(joblib_options.pop("initargs", self._setup[1]))
        _check_joblib_options(joblib_options)
        self._n_jobs = self.effective_n_jobs(n_jobs)
        if self._n_jobs == 1:  # as joblib's own backends: one job runs here, in order
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        threads = prefer == "threads" or require == "sharedmem"
        self._use("thread" if threads else self._engine, self._n_jobs, (initializer, initargs))
        self.parallel = parallel
        return self._n_jobs

    def _use(self, engine: str, workers: int,
             setup: tuple[Callable[..., object] | None, tuple[Any, ...]]) -> None:
        if self._shape == (engine, workers) and self._pool is not None and setup[0] is None:
            return
        self._close_pool()
        native: int | str = self.inner_max_num_threads or "auto"
        initializer, initargs = setup

        def make() -> Pool:
            return Pool(workers, engine=engine, native_threads=native,  # type: ignore[arg-type]
                        start_method=self._start_method if engine == "process" else None,
                        initializer=initializer, initargs=initargs, **self._limits)

        if engine == "thread" or initializer is not None:  # one pool per call
            self._pool = make()
        else:
            shape = (engine, workers, native, self._start_method,
                     tuple(sorted(self._limits.items())), _present())
            self._pool = _reusable.get(shape, make)
        self._shape = (engine, workers)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], Any] | None = None
               ) -> Future[Any]:
        """Run one joblib batch as a corework task."""
        assert self._pool is not None, "configure() comes first"
        future = self._pool.submit(_run_batch, func)
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._running.discard(future)

    def retrieve_result_callback(self, out: Future[Any]) -> Any:
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed: stop the others of the call (queued ones are cancelled,
        running ones killed, their workers replaced); the pool stays usable."""
        with self._lock:
            running = list(self._running)
        for future in running:
            future.kill()
        if not ensure_ready:
            self._close_pool()

    def terminate(self) -> None:
        """The end of a ``Parallel`` call: a thread pool ends; a process pool is kept for
        the next call of the same shape (see :func:`shutdown`); batch sizes start over,
        as joblib's own backends do."""
        self._close_pool(wait=True)
        self.reset_batch_stats()

    def get_nested_backend(self) -> tuple[Any, int | None]:
        """What a ``Parallel`` call inside a task runs on, as with joblib's own process
        backends: threads (as many as it asks for; one if it does not say), and a call
        nested deeper runs sequentially. The workers' BLAS/OpenMP pools are capped at
        ``inner_max_num_threads`` (default cores // n_jobs), so nested numpy work does
        not oversubscribe the machine."""
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), None

    def _close_pool(self, *, wait: bool = False) -> None:
        """This call is done with its pool: a thread pool ends, a kept process pool is
        let go (other calls may be using it: see _Reusable)."""
        pool, shape = self._pool, self._shape
        self._pool, self._shape = None, None
        if pool is None:
            return
        if shape is not None and (shape[0] == "thread" or pool not in _reusable):
            pool.shutdown(wait=wait, cancel_futures=True)
        else:
            _reusable.release(pool)

    def __reduce__(self) -> Any:
        raise TypeError("the corework joblib backend stays in the process that made it")


#: What joblib hands every backend's ``configure`` (or its constructor, through
#: ``parallel_config``) and the corework backend takes without using: arrays travel through
#: corework's shared memory (no memmapped temporary files), and workers are started by
#: corework (no multiprocessing context).
JOBLIB_OPTIONS = frozenset({"max_nbytes", "mmap_mode", "temp_folder", "verbose", "context",
                            "idle_worker_timeout"})


def _present() -> int:
    """The caller's environment and working directory, in short: a kept pool whose workers
    were started in another present is not reused (its workers would not see a variable
    set since, such as a user's OMP_NUM_THREADS)."""
    return hash((frozenset(os.environ.items()), os.getcwd()))


def _check_joblib_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - JOBLIB_OPTIONS)
    if unknown:
        raise TypeError(
            f"the corework joblib backend does not take {', '.join(map(repr, unknown))}; "
            "it takes corework.Pool's engine, timeout, retries, backoff, retry_on, "
            "memory_limit, max_tasks_per_worker, start_method, initializer and initargs")


def _run_batch(batch: Callable[[], Any]) -> Any:
    """Run one joblib batch in a worker. A module-level function of this module, so that
    unpickling it imports corework.joblib there: a ``Parallel(backend="corework")``
    inside the task finds the backend registered."""
    return batch()


def register() -> None:
    """Register the ``"corework"`` backend with joblib (done by ``import corework.joblib``;
    again here, e.g. after another library replaced it)."""
    joblib.register_parallel_backend(NAME, CoreworkBackend)


register()
