"""The scheduler's clock: the system's monotonic clock, or a test's fake one.

Deadlines and retry delays are read from a :class:`Clock`, and the timer thread sleeps
through it, so a test can move time forward by hand (as trio's ``MockClock`` does) and
see a timeout or a backoff happen without waiting for it."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the scheduler reads the time and sleeps until a deadline."""

    def now(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, wakeup: threading.Condition, seconds: float | None) -> None:
        """Wait on ``wakeup`` (its lock held) until notified, or ``seconds`` pass."""


class SystemClock:
    """``time.monotonic`` and a real wait."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, wakeup: threading.Condition, seconds: float | None) -> None:
        wakeup.wait(seconds)


SYSTEM_CLOCK = SystemClock()
