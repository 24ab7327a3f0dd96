"""Turning functions, arguments, results and exceptions into bytes and back.

Functions and arguments go by cloudpickle, so lambdas, closures and classes defined in
``__main__`` or a notebook cell travel by value. Results go by the standard pickle first
(faster for plain data) and fall back to cloudpickle. A task's exception travels as a
:class:`Failure`: the exception itself when it pickles, and always its type name, message
and formatted traceback, so the caller can say what happened even when it cannot be rebuilt.
"""

from __future__ import annotations

import enum
import pickle
import traceback
from collections.abc import Sequence
from typing import Any

import cloudpickle

from ._errors import SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL


class CallKind(enum.IntEnum):
    """How a chunk's items become calls of the task function."""

    ARG = 0  # fn(item)             -- map, imap
    STAR = 1  # fn(*item)           -- starmap, Executor.map over several iterables
    CALL = 2  # fn(*args, **kwargs) -- submit; item is (args, kwargs)


def call_one(fn: Any, kind: CallKind, item: Any) -> Any:
    """Call ``fn`` on one chunk item the way ``kind`` says."""
    if kind is CallKind.ARG:
        return fn(item)
    if kind is CallKind.STAR:
        return fn(*item)
    args, kwargs = item
    return fn(*args, **kwargs)


def dumps_for_workers(obj: Any, what: str) -> bytes:
    """Pickle ``obj`` (by value where needed) or raise an error saying ``what`` can't go."""
    try:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(
            f"cannot send {what} to a worker process: {exc}. Make sure everything it "
            "refers to can be pickled, or use engine='thread'."
        ) from exc


def dumps_items(items: Sequence[Any], describe: Any) -> bytes:
    """Pickle a chunk's items; on failure name the first item that cannot be pickled.

    ``describe(position)`` names the task at that position in the chunk for the message.
    """
    try:
        return cloudpickle.dumps(items, protocol=PROTOCOL)  # type: ignore[no-any-return]
    except Exception as exc:
        position = _first_unpicklable(items)
        where = describe(position) if position is not None else "a task"
        raise SerializationError(
            f"cannot send the arguments of {where} to a worker process: {exc}. "
            "Pass picklable arguments (or create the object inside the task), "
            "or use engine='thread'."
        ) from exc


def _first_unpicklable(items: Sequence[Any]) -> int | None:
    for position, item in enumerate(items):
        try:
            cloudpickle.dumps(item, protocol=PROTOCOL)
        except Exception:
            return position
    return None


def dumps_result(obj: Any) -> bytes:
    """Pickle a worker's message: standard pickle first, cloudpickle when that fails."""
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]


loads = pickle.loads


class Failure:
    """What a task raised, in a form that can always cross a process boundary."""

    __slots__ = ("exc", "message", "traceback", "type_name")

    def __init__(
        self, exc: BaseException | None, type_name: str, message: str, tb: str
    ) -> None:
        self.exc = exc
        self.type_name = type_name
        self.message = message
        self.traceback = tb

    @classmethod
    def capture(cls, exc: BaseException, skip: int = 0) -> Failure:
        """Record ``exc`` as raised just now; ``skip`` drops corework's own outer frames."""
        tb_top = exc.__traceback__
        for _ in range(skip):
            if tb_top is not None and tb_top.tb_next is not None:
                tb_top = tb_top.tb_next
        exc.__traceback__ = tb_top
        tb = "".join(traceback.format_exception(type(exc), exc, tb_top))
        return cls(exc, type(exc).__qualname__, str(exc), tb)

    def __reduce__(self) -> tuple[Any, ...]:
        exc_bytes: bytes | None = None
        try:
            blob = cloudpickle.dumps(self.exc, protocol=PROTOCOL)
            pickle.loads(blob)  # an exception that can't be rebuilt is sent as text
            exc_bytes = blob
        except Exception:
            pass
        return (_rebuild_failure, (exc_bytes, self.type_name, self.message, self.traceback))


def _rebuild_failure(exc_bytes: bytes | None, type_name: str, message: str, tb: str) -> Failure:
    exc = pickle.loads(exc_bytes) if exc_bytes is not None else None
    if exc is not None:
        exc.__traceback__ = None
    return Failure(exc, type_name, message, tb)
