"""The exception envelope: what a task raised, in a form that can always cross a process
boundary — the exception itself when it pickles and unpickles, and always its type name,
message and formatted traceback, so the caller can say what happened even when it cannot
be rebuilt."""

from __future__ import annotations

import contextlib
import os
import pickle
import traceback
from types import TracebackType
from typing import Any

__all__ = ["Failure"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


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
        """Record ``exc`` as raised just now. Its traceback starts at the user's frame:
        corework's own outer frames (the worker's loop, the call itself) are dropped, as
        ``concurrent.futures`` does for remote tracebacks; an error raised by the call
        itself (a wrong signature) keeps no frame at all. ``skip`` is kept for callers
        that drop frames by count."""
        del skip  # every leading frame inside the package is dropped, however many
        tb_top = _user_frames(exc.__traceback__)
        exc.__traceback__ = tb_top
        tb = "".join(traceback.format_exception(type(exc), exc, tb_top))
        return cls(exc, type(exc).__qualname__, _message(exc), tb)

    def __reduce__(self) -> tuple[Any, ...]:
        # Here, not at the top: the thread engine keeps its failures in the process and
        # never needs cloudpickle (nor the picklers).
        import cloudpickle

        from .picklers import PROTOCOL

        exc_bytes = _round_trip(cloudpickle, PROTOCOL, self.exc)
        if exc_bytes is None and type(self.exc).__module__ == "builtins":
            # a built-in exception that would not pickle (a RecursionError, pickled where
            # the stack is nearly spent) keeps its type: a new one with its message
            exc_bytes = _round_trip(cloudpickle, PROTOCOL, _plain_copy(self.exc))
        return (_rebuild_failure, (exc_bytes, self.type_name, self.message, self.traceback))


def _round_trip(cloudpickle: Any, protocol: int, exc: BaseException | None) -> bytes | None:
    """``exc`` pickled, if it unpickles too (an exception that can't be rebuilt is sent
    as text), else None."""
    try:
        blob: bytes = cloudpickle.dumps(exc, protocol=protocol)
        pickle.loads(blob)
    except BaseException:  # whatever its __reduce__ raises: SystemExit too
        return None
    return blob


def _plain_copy(exc: BaseException | None) -> BaseException | None:
    """A new exception of ``exc``'s built-in type with its arguments if they are plain
    (an OSError keeps its errno), else its message; or None."""
    if exc is None:
        return None
    plain = all(isinstance(arg, (str, int, float, bytes, type(None))) for arg in exc.args)
    for args in ([*exc.args] if plain else None, [_message(exc)]):
        if args is not None:
            with contextlib.suppress(BaseException):  # a constructor that wants more
                return type(exc)(*args)
    return None


def _message(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the exception's own ``__str__`` raises (the task
    still fails with it: the worker must not)."""
    try:
        return str(exc)
    except BaseException as failed:
        return f"<str() of the exception failed: {type(failed).__name__}>"


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first frame outside the corework package (None if none is)."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        tb = tb.tb_next
    return tb


def _rebuild_failure(exc_bytes: bytes | None, type_name: str, message: str, tb: str) -> Failure:
    exc = None
    if exc_bytes is not None:
        try:
            exc = pickle.loads(exc_bytes)
        except BaseException:  # it cannot be rebuilt here: the caller sees a TaskError
            exc = None
    if exc is not None:
        exc.__traceback__ = None
    return Failure(exc, type_name, message, tb)
