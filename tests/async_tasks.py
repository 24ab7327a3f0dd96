"""Task functions for the asyncio tests, importable by name in any worker."""

from __future__ import annotations

import os
import time
from pathlib import Path


def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("bad item 3")
    return x


def mark_and_sleep(job: tuple[str, int, float]) -> int:
    """Leave ``<folder>/<i>.<pid>`` behind on starting, then sleep: which tasks started,
    and in which process, is read from the folder."""
    folder, i, seconds = job
    Path(folder, f"{i}.{os.getpid()}").touch()
    time.sleep(seconds)
    return i
