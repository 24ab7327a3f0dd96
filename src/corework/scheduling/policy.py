"""What the scheduler does when a task is slow or fails: its timeout and its retries."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .._errors import TaskTimeout, WorkerCrashed
from ..transport.failure import Failure

_UNSET: Any = object()


@dataclass(frozen=True)
class TaskPolicy:
    """Per-task limits, set on a pool and overridable per call.

    ``timeout``: seconds one task may run; past it, its worker is stopped and replaced and
    the task fails with ``TaskTimeout``. ``retries``: how many more times a task that
    crashed its worker, timed out or hit the memory limit is run; ``retry_on`` adds
    exception types (raised by the task) worth another try. Retry ``k`` waits
    ``backoff * 2**(k-1)`` seconds first.
    """

    timeout: float | None = None
    retries: int = 0
    backoff: float = 0.0
    retry_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float)) and 0 < self.timeout < math.inf
        ):
            raise ValueError(f"timeout must be a positive number of seconds or None, "
                             f"not {self.timeout!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {self.retries!r}")
        if not isinstance(self.backoff, (int, float)) or self.backoff < 0:
            raise ValueError(f"backoff must be a non-negative number, not {self.backoff!r}")
        for kind in self.retry_on:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise TypeError(f"retry_on must hold exception types, not {kind!r}")

    def with_(self, timeout: Any = _UNSET, retries: Any = _UNSET, backoff: Any = _UNSET,
              retry_on: Any = _UNSET) -> TaskPolicy:
        """A copy with the given fields replaced (``None`` is a value for timeout)."""
        changes: dict[str, Any] = {}
        for name, value in (("timeout", timeout), ("retries", retries),
                            ("backoff", backoff), ("retry_on", retry_on)):
            if value is not _UNSET:
                changes[name] = tuple(value) if name == "retry_on" else value
        return replace(self, **changes) if changes else self

    def delay(self, attempt: int) -> float:
        """Seconds to wait before running attempt ``attempt + 1``."""
        return self.backoff * 2 ** (attempt - 1) if self.backoff else 0.0

    def retries_error(self, error: BaseException) -> bool:
        """Whether a task that ended with ``error`` (not raised by it) gets another try."""
        return isinstance(error, (WorkerCrashed, TaskTimeout))

    def retries_failure(self, failure: Failure) -> bool:
        """Whether a task that raised ``failure`` gets another try."""
        if not self.retry_on:
            return False
        if failure.exc is not None:
            return isinstance(failure.exc, self.retry_on)
        return failure.type_name in _names(self.retry_on)


#: The policy of a pool given no timeout or retries.
NO_LIMITS = TaskPolicy()


def _names(kinds: Iterable[type[BaseException]]) -> set[str]:
    return {kind.__qualname__ for kind in kinds}
