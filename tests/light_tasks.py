"""Task functions for the interpreter engine's tests: this module imports only the
standard library, so sub-interpreters can import it (the test modules import psutil)."""

from __future__ import annotations

import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def hang(_: object = None) -> None:
    """Never returns, in pure Python."""
    while True:
        pass


def meet(me: str, other: str, folder: str) -> str:
    """Leave a mark and wait for ``other``'s: returns only if both run at the same time."""
    Path(folder, me).touch()
    while not Path(folder, other).exists():
        time.sleep(0.001)
    return me


def uses_numpy(_: object = None) -> float:
    import numpy

    return float(numpy.sqrt(4.0))


_counter = 0


def count_setup(start: int) -> None:
    global _counter
    _counter = start


def counter(_: object = None) -> int:
    return _counter
