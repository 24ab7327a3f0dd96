"""Task functions for the interpreter engine's tests: this module imports only the
standard library, so sub-interpreters can import it (the test modules import psutil)."""

from __future__ import annotations

import os
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


#: What ``mixed`` does with some items (the outcome tests): the rest return x * 10.
MIXED_BAD = {3: "raise", 7: "crash", 11: "hang"}


def mixed(x: int) -> int:
    """Here, not in the test module: loading a task's module in each fresh sub-interpreter
    (and again in each one that replaces an interpreter stopped at a timeout) must be cheap,
    or the import of the test module's pytest and corework counts against the tasks'
    one-second timeout and a trivial task times out on a loaded machine."""
    what = MIXED_BAD.get(x)
    if what == "raise":
        raise ValueError(f"bad {x}")
    if what == "crash":
        os._exit(5)
    if what == "hang":
        while True:
            time.sleep(0.01)
    return x * 10
