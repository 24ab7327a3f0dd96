"""The exception tree, and how a task's failure is rebuilt in the caller.

    CoreworkError
    ├── TaskError               a task raised and its exception could not be rebuilt here
    ├── TaskTimeout             (also TimeoutError) a task ran past its deadline
    ├── WorkerCrashed           (also BrokenExecutor) the worker died while running a task
    │   └── MemoryLimitExceeded the worker grew past the pool's memory_limit
    ├── Cancelled               (also concurrent.futures.CancelledError) stopped on request
    ├── SerializationError      (also TypeError, PicklingError) data cannot be sent
    ├── InitializerFailed       (also BrokenExecutor) a worker's initializer raised
    ├── EngineUnavailable       (also RuntimeError) the engine cannot run here
    └── PoolClosed              (also RuntimeError) work submitted after shutdown

    CoreworkWarning             (a UserWarning) e.g. auto fell back to threads

A task that raises reaches the caller as its *own* exception type whenever that can be
rebuilt, with the worker's traceback attached as ``__cause__`` (a :class:`RemoteTraceback`),
as ``concurrent.futures`` does, plus a note naming the task.
"""

from __future__ import annotations

import concurrent.futures
import pickle
import reprlib
from typing import Any

__all__ = [
    "Cancelled",
    "CoreworkError",
    "CoreworkWarning",
    "InitializerFailed",
    "MemoryLimitExceeded",
    "PoolClosed",
    "RemoteTraceback",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
]

_short = reprlib.Repr()
_short.maxstring = 40
_short.maxother = 40
_short.maxlevel = 2


def short_repr(obj: Any) -> str:
    """A repr short enough for an error message."""
    return _short.repr(obj)


def describe_task(index: int | None, item: Any = None, *, has_item: bool = False) -> str:
    """'task 3 (item 7)': how every message names a task."""
    if index is None:
        return "the task"
    return f"task {index} (item {_short.repr(item)})" if has_item else f"task {index}"


class CoreworkError(Exception):
    """Base class of every error corework raises itself."""


class TaskError(CoreworkError):
    """A task raised an exception that could not be rebuilt in the caller.

    ``type_name`` and ``message`` describe the original; the worker's traceback is the
    ``__cause__``.
    """

    def __init__(self, message: str, *, type_name: str = "Exception") -> None:
        super().__init__(message)
        self.type_name = type_name


class TaskTimeout(CoreworkError, TimeoutError):
    """A task ran longer than its timeout; its worker was stopped."""


class WorkerCrashed(CoreworkError, concurrent.futures.BrokenExecutor):
    """The worker running a task died (exit code or signal in the message).

    Only that task fails: the worker is replaced and the pool goes on.
    """

    def __init__(self, message: str, *, exitcode: int | None = None,
                 started: bool = True, shared: bool = False,
                 collateral: bool = False) -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.started = started  # False: the worker was dead before the task reached it
        #: The worker process ran other tasks at the same time (threads=): which one
        #: brought it down is not known yet.
        self.shared = shared
        #: The worker process was stopped on purpose to end *another* task of it (a
        #: timeout, Future.kill()): this task is not to blame.
        self.collateral = collateral


class MemoryLimitExceeded(WorkerCrashed):
    """A worker grew past the pool's ``memory_limit`` and was killed (and replaced)."""


class Cancelled(CoreworkError, concurrent.futures.CancelledError):
    """The task was cancelled before it could finish."""


class SerializationError(CoreworkError, TypeError, pickle.PicklingError):
    """A function, argument or result cannot be pickled (or unpickled) to cross a process
    boundary; also a ``pickle.PicklingError``, as code written for ``concurrent.futures``
    expects.

    ``stage`` says where: ``"pickle-argument"`` (here, at submit), ``"unpickle-argument"``
    (in the worker), ``"pickle-result"`` (in the worker), ``"unpickle-result"`` (here);
    ``original`` is what pickling raised there, when it could travel."""

    def __init__(self, message: str, *, stage: str | None = None,
                 original: BaseException | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.original = original


class InitializerFailed(CoreworkError, concurrent.futures.BrokenExecutor):
    """A worker's ``initializer`` raised, so the pool cannot run tasks."""


class EngineUnavailable(CoreworkError, RuntimeError):
    """The chosen engine cannot run here (e.g. sub-interpreters before Python 3.12)."""


class PoolClosed(CoreworkError, RuntimeError):
    """Work was submitted to a pool that has been shut down."""


class CoreworkWarning(UserWarning):
    """Something worked, but not the way it should: e.g. ``engine="auto"`` could not
    pickle a function and ran it on threads of this process instead."""


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of a task's exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (shown there by corework's own messages)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            exc.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)
