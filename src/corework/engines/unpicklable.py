"""What a worker sends back when pickling fails it: a function or arguments that will not
load there fail their chunk with a SerializationError naming the stage; a result or an
exception that will not pickle fails its own task only."""

from __future__ import annotations

import pickle
from typing import Any

from .._errors import SerializationError
from ..transport.channel import Message
from ..transport.failure import Failure
from ..transport.packing import pack_result
from .contract import ChunkReport

__all__ = ["CannotLoad", "fail_all", "load_function", "replace_unpicklable"]


def load_function(message: Message, functions: dict[int, Any]) -> None:
    _, fn_id, forget = message.meta
    for old in forget:
        functions.pop(old, None)
    try:
        functions[fn_id] = message.unpack()
    except BaseException as exc:  # e.g. a module the function needs is missing here
        functions[fn_id] = CannotLoad(exc)


class CannotLoad:
    """Stands in for a function that failed to load, so its chunks fail with the reason."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def fail_all(chunk_id: int, exc: BaseException, what: str) -> ChunkReport:
    error = SerializationError(
        f"the worker could not unpickle the task's {what}: {type(exc).__name__}: {exc}"
        f"{_unpickling_hint(exc)}",
        stage="unpickle-function" if what == "function" else "unpickle-argument",
        original=_portable(exc))
    error.__cause__ = exc
    return ChunkReport(chunk_id, [], error=Failure.capture(error))


def _portable(exc: BaseException) -> BaseException | None:
    """``exc`` if it survives pickling, to travel inside the error that names the stage
    (its traceback text travels anyway)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except BaseException:
        return None
    exc.__traceback__ = None
    return exc


def _unpickling_hint(exc: BaseException) -> str:
    if isinstance(exc, (ImportError, AttributeError)):
        return (". Make sure the worker can import what it refers to (a module on "
                "sys.path, a class at module level)")
    return ""


def replace_unpicklable(report: ChunkReport) -> None:
    for position, value in enumerate(report.results):
        try:
            pack_result(value).close()
        except BaseException as exc:
            report.results[position] = None
            error = SerializationError(
                f"the task's result {type(value).__qualname__} could not be pickled in the "
                f"worker to send it back: {type(exc).__name__}: {exc}. Return plain data, "
                "or use engine='thread'.", stage="pickle-result", original=_portable(exc))
            error.__cause__ = exc
            report.failures[position] = Failure.capture(error)
    for position, failure in list(report.failures.items()):
        try:
            pack_result(failure).close()
        except BaseException as exc:  # an exception whose text or type cannot travel
            report.failures[position] = Failure(
                None, getattr(failure, "type_name", "Exception"),
                f"(its exception could not be sent back: {type(exc).__name__}: {exc})", "")
