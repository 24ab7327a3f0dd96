"""The exception envelope: what a task raised, in a form that can always cross a process
boundary — the exception itself when it pickles and unpickles, and always its type name,
message and formatted traceback, so the caller can say what happened even when it cannot
be rebuilt."""

from __future__ import annotations

import pickle
import traceback
from typing import Any

__all__ = ["Failure"]


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
        # Here, not at the top: the thread engine keeps its failures in the process and
        # never needs cloudpickle (nor the picklers).
        import cloudpickle

        from .picklers import PROTOCOL

        exc_bytes: bytes | None = None
        try:
            blob = cloudpickle.dumps(self.exc, protocol=PROTOCOL)
            pickle.loads(blob)  # an exception that can't be rebuilt is sent as text
            exc_bytes = blob
        except BaseException:  # whatever its __reduce__ raises: SystemExit too
            pass
        return (_rebuild_failure, (exc_bytes, self.type_name, self.message, self.traceback))


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
