"""What the drop-in executors share: the standard library's constructor checks, an
initializer wrapper that names threads, and the executor base over :class:`corework.Pool`."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from .._errors import (
    InitializerFailed,
    PoolClosed,
    SerializationError,
)
from ..api.pool import Pool
from ..scheduling.future import Future

#: The standard library's start methods, and the corework start method each runs on.
START_METHODS = {"fork": "fork", "spawn": "spawn", "forkserver": "fork"}


def cpu_count() -> int:
    """The CPU count the standard library's executors size themselves by on this Python."""
    count = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13+: affinity-aware
    return int(count() or 1)


def check_max_workers(max_workers: int | None, default: int) -> int:
    if max_workers is None:
        return default
    if max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    return max_workers


def check_initializer(initializer: Callable[..., object] | None) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")


def _initializer_class() -> type[Any]:
    """The class of the initializer every drop-in executor gives its workers.

    Made in a function so that cloudpickle sends it by value: a sub-interpreter cannot
    import corework (its C extensions do not load there), yet must run it."""

    class Initializer:
        """Runs a worker's initializer the way the standard library's workers do: the
        thread gets its name first, and an initializer that raises is logged to the
        ``concurrent.futures`` logger at CRITICAL before the pool breaks."""

        def __init__(self, initializer: Callable[..., object] | None,
                     initargs: tuple[Any, ...], thread_names: str | None) -> None:
            self.initializer = initializer
            self.initargs = initargs
            self.thread_names = thread_names  # set only where workers are our threads
            self.numbers = itertools.count()
            self.lock = threading.Lock()

        def __call__(self) -> None:
            if self.thread_names is not None:
                with self.lock:
                    number = next(self.numbers)
                threading.current_thread().name = f"{self.thread_names}_{number}"
            if self.initializer is None:
                return
            try:
                self.initializer(*self.initargs)
            except BaseException:
                logging.getLogger("concurrent.futures").critical(
                    "Exception in initializer:", exc_info=True)
                raise

        def __reduce__(self) -> tuple[Any, ...]:  # (a lock does not pickle)
            return type(self), (self.initializer, self.initargs, None)

        def __repr__(self) -> str:
            return repr(self.initializer)

    return Initializer


_Initializer = _initializer_class()


class Executor(Pool):
    """What the drop-in classes share: a Pool, plus the standard library's
    ``_max_workers`` and ``_broken``."""

    _max_workers: int

    _submitted = False  # whether submit() has returned a future yet

    def _start(self, max_workers: int, engine: str,
               initializer: Callable[..., object] | None, initargs: tuple[Any, ...], *,
               thread_names: str | None = None, slot_names: str | None = None,
               start_method: str | None = None, max_tasks_per_child: int | None = None,
               native_threads: int | Literal["auto"] | None = None) -> None:
        """``thread_names``: named by the initializer, in the worker (thread engine);
        ``slot_names``: named by the engine (the threads hosting sub-interpreters)."""
        self._max_workers = max_workers
        setup: Callable[..., object] | None = initializer
        if initializer is not None or thread_names is not None:
            setup, initargs = _Initializer(initializer, tuple(initargs), thread_names), ()
        Pool.__init__(self, max_workers, engine=engine, initializer=setup, initargs=initargs,
                      start_method=start_method, max_tasks_per_worker=max_tasks_per_child,
                      native_threads=native_threads, _thread_names=slot_names)
        self._scheduler.translate = type(self)._stdlib_error  # no cycle through the pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """As the standard library's: arguments that cannot be pickled fail the future
        (a ``PicklingError`` from ``result()``), and a pool shut down raises RuntimeError.
        The standard library starts its workers on ``submit``, so its first ``submit``
        never finds the pool broken (by a failed initializer): here too, that future fails
        instead, and a later ``submit`` raises."""
        try:
            refused = self._refuse(fn, args, kwargs)
            if refused is not None:
                self._scheduler.dispatch.check_open()
                future = _failed(refused)
            else:
                future = super().submit(fn, *args, **kwargs)
        except SerializationError as exc:
            if exc.stage != "pickle-argument":
                raise
            future = _failed(exc)
        except PoolClosed:
            when = "interpreter shutdown" if _exiting() else "shutdown"
            raise RuntimeError(f"cannot schedule new futures after {when}") from None
        except concurrent.futures.BrokenExecutor as exc:
            error = self._stdlib_error(exc)
            if self._submitted:
                raise error from error.__cause__
            future = _failed(error)
        self._submitted = True
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],  # type: ignore[override]
            timeout: float | None = None, chunksize: int = 1,
            buffersize: int | None = None) -> Iterator[Any]:
        """``Executor.map``, the standard library's signature exactly (3.14's, with
        ``buffersize``, on every Python): corework's ``progress=`` is on ``Pool.map``.

        Code that replaced ``submit`` on the executor (tqdm's ``thread_map`` and
        ``process_map`` count progress that way) sees every task go through it, as the
        standard library's ``map`` sends them; otherwise tasks go in corework's chunks."""
        if _submit_replaced(self) and (buffersize is None or _STDLIB_BUFFERSIZE):
            extra = {} if buffersize is None else {"buffersize": buffersize}
            return concurrent.futures.Executor.map(self, fn, *iterables, timeout=timeout,
                                                   **extra)
        return Pool.map(self, fn, *iterables, timeout=timeout, chunksize=chunksize,
                        buffersize=buffersize)

    def _refuse(self, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> BaseException | None:
        """Why the standard library's executor would fail this task before it runs, or
        None (see the interpreter executor on 3.14)."""
        return None

    @staticmethod
    def _stdlib_error(error: BaseException) -> BaseException:
        """The exception the standard library's executor would give for ``error``."""
        return error

    @property
    def _broken(self) -> Any:  # the standard library's bool | str
        """False, or why no task can run any more (the standard library's convention)."""
        error = self._scheduler.broken
        return False if error is None else str(error)

    @_broken.setter
    def _broken(self, value: Any) -> None:
        raise AttributeError("_broken is read-only: it tells whether the pool can run tasks")

    def __repr__(self) -> str:
        return f"<corework.futures.{type(self).__name__} workers={self.workers}>"


#: Whether the standard library's Executor.map takes ``buffersize`` (3.14+).
_STDLIB_BUFFERSIZE = sys.version_info >= (3, 14)


def _submit_replaced(executor: Executor) -> bool:
    """Whether ``submit`` is not corework's own: set on the instance, or overridden by a
    subclass outside corework."""
    if "submit" in vars(executor):
        return True
    return not type(executor).submit.__module__.startswith("corework.")


def _failed(error: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def like(old: BaseException, new: BaseException) -> BaseException:
    """``new``, with ``old``'s notes, cause and traceback."""
    if new is not old:
        notes = getattr(old, "__notes__", None)
        if notes:
            new.__notes__ = list(notes)  # type: ignore[attr-defined]
        new.__cause__ = new.__cause__ or old.__cause__
        new.__traceback__ = old.__traceback__
    return new


def _log_initializer_failure(error: BaseException) -> None:
    """Log a worker's failed initializer here, as the standard library's executors do
    (a sub-interpreter's own log goes to that interpreter's logging, not this one's)."""
    if isinstance(error, InitializerFailed):
        cause = error.__cause__ or error
        logging.getLogger("concurrent.futures").critical(
            "Exception in initializer:", exc_info=(type(cause), cause, cause.__traceback__))


class LogOnce:
    """The scheduler's ``on_broken`` hook of an interpreter executor: logs a failed
    initializer once, whether the engine reported it before the hook was set (the
    workers start with the pool) or after. Holds no reference to the pool."""

    def __init__(self, translate: Callable[[BaseException], BaseException]) -> None:
        self._translate = translate
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, error: BaseException) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        _log_initializer_failure(self._translate(error))


def _exiting() -> bool:
    """Whether the program's end has shut corework's pools down already."""
    from ..api import live_pools

    return live_pools.exiting()


