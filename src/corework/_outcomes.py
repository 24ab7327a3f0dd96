"""What a task ended with: its :class:`~corework._transport.Failure` turned into the
exception the caller sees, and the :class:`Outcome` of one item of a map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from ._errors import RemoteTraceback, TaskError, add_note
from ._transport import Failure

__all__ = ["Outcome", "task_exception"]

T = TypeVar("T")


def task_exception(failure: Failure | BaseException, where: str,
                   remote: bool) -> BaseException:
    """The task's own exception where it could be rebuilt, else a :class:`TaskError`.

    ``where`` names the task ("task 3 (item 7)"); it is added as a note. Exceptions from
    another process get the worker's traceback as ``__cause__``. An exception the
    scheduler already made final (a timeout, a crash after retries) is returned as is.
    """
    if isinstance(failure, BaseException):
        return failure
    exc = failure.exc
    if exc is None:
        exc = TaskError(f"{where} raised {failure.type_name}: {failure.message}",
                        type_name=failure.type_name)
    else:
        add_note(exc, f"raised by {where}")
    if remote and failure.traceback:
        exc.__cause__ = RemoteTraceback(failure.traceback)
    return exc


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """How one item of a map ended (``errors="outcome"``): its position in the input,
    its value or the exception it ended with, and how many times it ran.

    Unlike ``errors="return"``, an outcome tells a task that *returned* an exception
    object from one that raised it, and says which item it was when results come in
    completion order (``ordered=False``).
    """

    index: int
    value: T | None = None
    error: BaseException | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Whether the task returned (its value is ``value``)."""
        return self.error is None

    def result(self) -> T:
        """The value, or the task's exception raised here."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]
