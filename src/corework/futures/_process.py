"""``corework.futures.ProcessPoolExecutor``: the standard library's, on corework's process
engine."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import multiprocessing
import multiprocessing.context
import sys
from collections.abc import Callable
from typing import Any

from .._errors import (
    RemoteTraceback,
    SerializationError,
    WorkerCrashed,
)
from ..api.pool import Pool
from ._executor import (
    START_METHODS,
    Executor,
    check_initializer,
    check_max_workers,
    cpu_count,
    like,
)


class ProcessPoolExecutor(Executor, concurrent.futures.process.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor``, on corework's process engine.

    ``max_workers`` defaults to the CPU count, as in the standard library. ``mp_context``
    picks the start method (see the module docstring: ``"forkserver"`` runs on corework's
    launcher); without one, the standard library's default start method on this Python is
    used, and ``"spawn"`` when ``max_tasks_per_child`` is given. A ``"fork"`` context
    given explicitly forks the workers from this process as it is when the pool starts
    (corework's ``start_method="fork-caller"``): they see every module's state of then,
    as the standard library's forked workers do. As in the standard
    library, ``max_tasks_per_child`` (3.11+) refuses the ``"fork"`` start method, although
    corework's forked workers could honour it: ``corework.Pool(max_tasks_per_worker=...)``
    has no such limit.
    """

    _mp_context: multiprocessing.context.BaseContext | None

    if sys.version_info >= (3, 11):
        def __init__(self, max_workers: int | None = None,
                     mp_context: multiprocessing.context.BaseContext | None = None,
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = (), *,
                     max_tasks_per_child: int | None = None) -> None:
            self._configure(max_workers, mp_context, initializer, initargs,
                            max_tasks_per_child)
    else:  # pragma: no cover - exercised on Python 3.10
        def __init__(self, max_workers: int | None = None,
                     mp_context: multiprocessing.context.BaseContext | None = None,
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = ()) -> None:
            self._configure(max_workers, mp_context, initializer, initargs, None)

    def _configure(self, max_workers: int | None,
                   mp_context: multiprocessing.context.BaseContext | None,
                   initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
                   max_tasks_per_child: int | None) -> None:
        workers = check_max_workers(max_workers, cpu_count())
        asked_to_fork = mp_context is not None and mp_context.get_start_method() == "fork"
        if mp_context is None:
            mp_context = multiprocessing.get_context(
                "spawn" if max_tasks_per_child is not None else None)
        self._mp_context = mp_context
        method = mp_context.get_start_method(allow_none=False)
        if method not in START_METHODS:
            raise ValueError(f"mp_context with start method {method!r} is not supported; "
                             f"use one of {', '.join(map(repr, START_METHODS))}")
        check_initializer(initializer)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if method == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                                 "multiprocessing start method; supply a different "
                                 "mp_context (corework.Pool(max_tasks_per_worker=...) "
                                 "has no such limit).")
        self._start(workers, "process", initializer, initargs,
                    start_method="fork-caller" if asked_to_fork else START_METHODS[method],
                    max_tasks_per_child=max_tasks_per_child, native_threads="auto")

    if sys.version_info >= (3, 14):  # pragma: no cover - exercised on Python 3.14
        def terminate_workers(self) -> None:
            """As the standard library's (through its ``_force_shutdown``)."""
            self._force_shutdown(operation=concurrent.futures.process._TERMINATE)

        def kill_workers(self) -> None:
            """As the standard library's (through its ``_force_shutdown``)."""
            self._force_shutdown(operation=concurrent.futures.process._KILL)

        def _force_shutdown(self, operation: str) -> None:
            if operation == concurrent.futures.process._TERMINATE:
                Pool.terminate_workers(self)
            elif operation == concurrent.futures.process._KILL:
                Pool.kill_workers(self)
            else:
                raise ValueError(f"Unsupported operation: {operation!r}")

    @staticmethod
    def _stdlib_error(error: BaseException) -> BaseException:
        """A dead worker, or data that could not be loaded where it arrived, breaks a
        standard-library process pool (``BrokenProcessPool``); what pickling a result
        raised in the worker reaches the caller as is; a worker's traceback is the
        standard library's ``_RemoteTraceback`` (from 3.15, a dead worker's exit code is
        one too, as gh-139462 has it). corework's own types stay true too."""
        if isinstance(error, WorkerCrashed):
            died = _WorkerDied(str(error), exitcode=error.exitcode)
            if (sys.version_info >= (3, 15) and error.__cause__ is None
                    and error.exitcode is not None):  # gh-139462: say how the worker ended
                died.__cause__ = concurrent.futures.process._RemoteTraceback(
                    f"\n'''\nA worker process terminated abruptly with exit code "
                    f"{error.exitcode}'''")
            error = like(error, died)
        elif isinstance(error, SerializationError):
            if error.stage in ("unpickle-argument", "unpickle-function", "unpickle-result"):
                error = like(error, _LoadFailed(str(error), stage=error.stage,
                                                 original=error.original))
            elif error.stage == "pickle-result" and error.original is not None:
                error = like(error, error.original)
        if isinstance(error.__cause__, RemoteTraceback):
            text: Any = str(error.__cause__)  # typeshed says a traceback: it is the text
            error.__cause__ = concurrent.futures.process._RemoteTraceback(text)
        return error


class _WorkerDied(WorkerCrashed, concurrent.futures.process.BrokenProcessPool):
    """A worker process died: corework's ``WorkerCrashed`` and the standard library's
    ``BrokenProcessPool`` (only that task is lost, and the pool goes on)."""


class _LoadFailed(SerializationError, concurrent.futures.process.BrokenProcessPool):
    """A task's arguments or result could not be unpickled where they arrived: corework's
    ``SerializationError`` and the standard library's ``BrokenProcessPool``."""


