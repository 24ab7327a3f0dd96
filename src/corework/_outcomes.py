"""Turning a task's :class:`~corework._transport.Failure` into the exception the caller sees."""

from __future__ import annotations

from ._errors import RemoteTraceback, TaskError, add_note
from ._transport import Failure


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
