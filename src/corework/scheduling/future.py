"""``Future``: a ``concurrent.futures.Future`` that can also stop its running task."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Future"]

T = TypeVar("T")


class Future(concurrent.futures.Future[T]):
    """What ``Pool.submit`` returns. ``cancel()`` keeps its standard meaning (only a task
    that has not started can be cancelled); ``kill()`` also stops a running one."""

    def __init__(self) -> None:
        super().__init__()
        self._kill: Callable[[], bool] | None = None

    def kill(self) -> bool:
        """Cancel the task, or stop it if it runs: a process worker is killed and
        replaced; a thread is interrupted (see the README for what cannot be). The
        future then raises ``Cancelled``. False if the task had already finished."""
        if self.cancel():
            return True
        if self._kill is None or self.done():
            return False
        return self._kill()
