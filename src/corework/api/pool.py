"""``Pool``: a ``concurrent.futures.Executor`` over any engine, plus ``imap`` and ``starmap``."""

from __future__ import annotations

import concurrent.futures
import copy
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..engines import CallKind, Prober, create_engine
from ..scheduling.future import Future
from ..scheduling.mapjob import Errors, MapJob, parse_errors
from ..scheduling.policy import _UNSET
from ..scheduling.scheduler import Scheduler
from . import live_pools
from .keywords import PoolKeywords, signed
from .options import PoolOptions, parse_chunksize

if sys.version_info >= (3, 11):  # at run time too: typing.get_type_hints() resolves them
    from typing import Unpack
elif TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Pool"]

T = TypeVar("T")

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
    single-threaded launcher, the default), ``"spawn"`` (fresh interpreters) or
    ``"fork-caller"`` (forked from a launcher forked from this process when the pool
    starts: the workers have every module's state of that moment, as multiprocessing's
    fork gives; this process is forked even if it has threads, as multiprocessing does).

    ``address`` (engine ``"dask"``) is a Dask scheduler's, e.g. ``"tcp://host:8786"``;
    without it the dask engine starts a ``LocalCluster`` of ``workers`` processes.

    ``timeout``, ``retries``, ``backoff`` and ``retry_on`` apply to every task (see
    :meth:`options` to change them for some): a task running past ``timeout`` seconds
    fails with ``TaskTimeout`` and its worker is replaced; a task that crashed its worker
    or timed out (or raised one of ``retry_on``) runs again up to ``retries`` times.

    ``relay_logs`` (process workers): what tasks log with ``logging`` reaches this
    process's loggers and handlers as if logged here, levels and logger names kept,
    with ``record.corework_task`` (the task's index in its map) and
    ``record.corework_worker`` added; a record logged just before a crash still
    arrives. ``relay_logs=False`` leaves logging in each worker to itself.
    """

    @signed(PoolKeywords)
    def __init__(self, workers: int | None = None, *, _prober: Prober | None = None,
                 _thread_names: str | None = None, **options: Unpack[PoolKeywords]) -> None:
        self._set_up(PoolOptions.parse(workers, options, prober=_prober,
                                       thread_names=_thread_names))

    def _set_up(self, options: PoolOptions) -> None:
        self.engine = options.engine
        self._policy = options.policy
        engine_ = create_engine(self.engine, options.for_engine())
        # The policy goes with each submission (a view of options() has its own), not here.
        self._scheduler = Scheduler(engine_, max_tasks_per_worker=options.max_tasks_per_worker)
        self._shutdown_lock = threading.Lock()
        self._handle = live_pools.Handle(self._scheduler)
        live_pools.remember(self._scheduler)

    @property
    def workers(self) -> int:
        """How many workers (processes, threads, sub-interpreters, Dask lanes) it has."""
        return self._scheduler.engine.workers

    @property
    def _max_workers(self) -> int:
        """What code written for ``ProcessPoolExecutor`` reads (dask, tqdm): how many
        tasks run at once (the drop-in executors set it to their ``max_workers``)."""
        given: int | None = self.__dict__.get("_given_max_workers")
        return self._scheduler.slots if given is None else given

    @_max_workers.setter
    def _max_workers(self, value: int) -> None:
        self.__dict__["_given_max_workers"] = value

    @property
    def threads(self) -> int:
        """Task threads per worker process (1 but with ``threads=``, or once ``cw.map`` on
        ``engine="auto"`` saw its tasks wait); ``workers * threads`` run at once."""
        return self._scheduler.slots // max(1, self._scheduler.engine.workers)

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
            chunksize: int = 1, buffersize: int | None = None,
            progress: object = False) -> Iterator[T]:
        """Exactly ``Executor.map`` (Python 3.14's, on every Python): the work is submitted
        now, results come in order, from a generator whose ``close()`` (or dropping it)
        cancels what has not started.

        ``timeout`` counts from this call; past it, ``next()`` raises ``TimeoutError``.
        ``buffersize``: read the inputs lazily, keeping at most that many chunks submitted
        ahead of the results taken — bounded memory over huge or endless inputs.
        ``progress`` (corework's own, default off): ``True`` for a progress bar, or your
        tqdm bar, rich ``Progress`` or ``callback(done, total, failed)``.
        """
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        if isinstance(chunksize, int) and not isinstance(chunksize, bool) and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        progress = _progress_arg(progress)
        total = _shortest(iterables) if progress is not None else None
        calls: Iterable[Any] = zip(*iterables, strict=False)  # stop at the shortest
        if buffersize is None:
            calls = list(calls)  # read now, as Executor.map does
        job = MapJob(self._scheduler, fn, calls, kind=CallKind.STAR,
                     chunksize=parse_chunksize(chunksize),
                     deadline=None if timeout is None else time.monotonic() + timeout,
                     window=sys.maxsize if buffersize is None else buffersize,
                     policy=self._policy)
        job.fill()
        return _results(job, progress, total)

    def imap(self, fn: Callable[[Any], T], iterable: Iterable[Any], *, ordered: bool = True,
             chunksize: int | Literal["auto"] = "auto", errors: Errors = "raise",
             progress: object = False) -> Iterator[Any]:
        """Lazily map ``fn`` over ``iterable``; ``ordered=False`` yields results as done.

        ``errors`` is as for :func:`corework.map`: ``"raise"`` ends the iteration at the
        first failed task, ``"return"`` yields its exception in its place and goes on,
        ``"outcome"`` yields a :class:`corework.Outcome` for every item.
        ``progress``: ``True`` for a progress bar (rich on a terminal if installed, else
        tqdm; a widget in Jupyter), or your own tqdm bar or rich ``Progress``, or a
        callable called with ``(done, total, failed)`` after each batch of results.
        """
        job = self._job(fn, iterable, CallKind.ARG, ordered=ordered, chunksize=chunksize,
                        errors=errors)
        progress = _progress_arg(progress)
        if progress is None:
            return iter(job)
        return _each(_watched(job.chunks(), iterable, progress, errors))

    def _map_chunks(self, fn: Callable[[Any], T], iterable: Iterable[Any], *, ordered: bool,
                    chunksize: int | None, errors: Errors) -> Iterator[list[Any]]:
        """``imap`` a chunk's results at a time, options checked (for ``cw.map``)."""
        return MapJob(self._scheduler, fn, iterable, chunksize=chunksize, ordered=ordered,
                      policy=self._policy, errors=errors).chunks()

    def imap_batches(self, fn: Callable[..., Any],
                     calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]], *,
                     ordered: bool = True, chunksize: int | Literal["auto"] = "auto",
                     errors: Errors = "raise", progress: object = False
                     ) -> Iterator[list[Any]]:
        """``fn(*args, **kwargs)`` for each ``(args, kwargs)`` pair of ``calls``, lazily;
        yields the results a batch at a time: each list is what came back together (one
        chunk), so a consumer can store a batch at once (``corework run`` commits each to
        its journal). ``ordered``, ``chunksize``, ``errors`` and ``progress`` are as for
        :meth:`imap`."""
        chunks = self._job(fn, calls, CallKind.CALL, ordered=ordered, chunksize=chunksize,
                           errors=errors).chunks()
        return _watched(chunks, calls, _progress_arg(progress), errors)

    def starmap(self, fn: Callable[..., T], iterable: Iterable[Iterable[Any]], *,
                chunksize: int | Literal["auto"] = "auto", errors: Errors = "raise",
                progress: object = False) -> list[Any]:
        """``[fn(*args) for args in iterable]``, in parallel; ``errors`` and ``progress``
        as for ``imap``."""
        job = self._job(fn, iterable, CallKind.STAR, ordered=True, chunksize=chunksize,
                        errors=errors)
        results: list[Any] = []
        for values in _watched(job.chunks(), iterable, _progress_arg(progress), errors):
            results.extend(values)
        return results

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
            live_pools.forget(self._scheduler)

    def kill(self) -> None:
        """Stop now: cancel pending work, stop running tasks (killing process workers)."""
        stop_now(self, "cancelled by Pool.kill()")

    def kill_workers(self) -> None:
        """Python 3.14's name for :meth:`kill`: pending work is cancelled, running tasks
        are stopped (process workers get SIGKILL), and the pool takes no more work."""
        stop_now(self, "stopped by Pool.kill_workers()")

    def terminate_workers(self) -> None:
        """As :meth:`kill_workers`, but process workers get SIGTERM (a task may clean up
        in a signal handler of its own); Python 3.14's ``ProcessPoolExecutor`` API."""
        stop_now(self, "stopped by Pool.terminate_workers()", gently=True)

    def _pids(self) -> list[int]:
        """Live worker process ids (process engine), for ``Process`` and tests."""
        return self._scheduler.engine.worker_pids()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.kill()  # Ctrl-C: don't make the user wait for running tasks
        else:
            self.shutdown(wait=True)
        return False

    def __repr__(self) -> str:
        threads = f" threads={self.threads}" if self.threads > 1 else ""
        return f"<corework.Pool engine={self.engine!r} workers={self.workers}{threads}>"

    def aimap(self, fn: Callable[[Any], Any], iterable: Iterable[Any], *, ordered: bool = True,
              chunksize: int | Literal["auto"] = "auto", errors: Errors = "raise",
              kill_on_cancel: bool = False) -> AsyncGenerator[Any, None]:
        """:meth:`imap` for asyncio: ``async for result in pool.aimap(fn, items)``; results
        arrive through the running event loop, which goes on serving other coroutines.
        Leaving the iteration early (``aclose()``, ``break``, a cancelled task) drops the
        work not yet started; ``kill_on_cancel=True`` also kills the tasks that run."""
        from ..scheduling.amapjob import async_chunks, flatten  # asyncio: only when used

        return flatten(async_chunks(self._scheduler, fn, iterable, policy=self._policy,
                               ordered=ordered, chunksize=parse_chunksize(chunksize),
                               errors=parse_errors(errors), kill_on_cancel=kill_on_cancel))


def pool_of(options: PoolOptions) -> Pool:
    """A pool of checked options (``cw.map``'s: no keywords unpacked and repacked)."""
    pool = Pool.__new__(Pool)
    pool._set_up(options)
    return pool


def _results(job: MapJob, progress: object, total: int | None) -> Iterator[Any]:
    """``Pool.map``'s generator: its ``finally`` cancels what has not started."""
    try:
        if progress is not None:
            from . import progress as _progress

            yield from _each(_progress.observe(job.chunks(), total, progress))
        else:
            yield from job
    finally:
        job.cancel()


def _progress_arg(progress: object) -> object:
    """A map's ``progress=``, checked at the call; None for none (never tested for truth:
    a tqdm bar without a total refuses ``bool()``)."""
    if progress is False or progress is None:
        return None
    from . import progress as _progress

    return _progress.check(progress)


def _watched(chunks: Iterator[list[Any]], items: Iterable[Any], progress: object,
             errors: str) -> Iterator[list[Any]]:
    """``chunks``, shown on the display ``progress`` asks for (None: as they are)."""
    if progress is None:
        return chunks
    from . import progress as _progress

    return _progress.observe(chunks, _progress.length(items), progress, errors)


def _each(chunks: Iterator[list[Any]]) -> Iterator[Any]:
    """Each result of each chunk; one handed out is no longer held here (as MapJob)."""
    for values in chunks:
        values.reverse()
        while values:
            yield values.pop()


def _shortest(iterables: tuple[Iterable[Any], ...]) -> int | None:
    """How many calls ``zip(*iterables)`` makes, where every input knows its length."""
    from .progress import length

    lengths = [length(iterable) for iterable in iterables]
    known = [n for n in lengths if n is not None]
    return min(known) if known and len(known) == len(lengths) else None


def stop_now(pool: Pool, reason: str, *, gently: bool = False) -> None:
    with pool._shutdown_lock:
        pool._scheduler.terminate(reason, gently=gently)
    live_pools.forget(pool._scheduler)
