"""Task functions importable by name (the standard pickle finds them in any worker)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The environment for a child interpreter that imports this repository's tests.
ROOT_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def square(x: int) -> int:
    return x * x


def cpu_task(n: int) -> int:
    """Pure-Python arithmetic that holds the GIL for the whole call."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def add(a: int, b: int = 0) -> int:
    return a + b


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def whoami(_: object = None) -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


class Unrebuildable(Exception):
    """An exception whose constructor needs two arguments, so unpickling it fails (even
    where a library such as tblib, which dask installs, rebuilds exceptions through
    ``__new__``: workers import what the caller imported)."""

    def __new__(cls, a: int, b: int) -> Unrebuildable:
        return super().__new__(cls, a, b)

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def raise_unrebuildable(_: object) -> None:
    raise Unrebuildable(1, 2)


class Unprintable(Exception):
    """An exception whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def raise_unprintable(_: object) -> None:
    raise Unprintable()


STATE: dict[str, object] = {}


def remember(value: object) -> None:
    STATE["value"] = value


def recall(_: object = None) -> object:
    return STATE.get("value")


def skip_on_dask(engine: str, reason: str) -> None:
    """Skip an engine-bound test that does not apply to Dask, saying why."""
    if engine == "dask":
        pytest.skip(f"not on dask: {reason}")


def skip_on_interpreter(engine: str, reason: str) -> None:
    """Skip an engine-bound test that does not apply to sub-interpreters, saying why."""
    if engine == "interpreter":
        pytest.skip(f"not on sub-interpreters: {reason}")


def alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie has ended)."""
    import psutil  # here: sub-interpreters import this module, and psutil refuses them

    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def gone_within(pids: Iterable[int], seconds: float) -> bool:
    """Whether every one of ``pids`` ends within ``seconds`` (a bound, not a timing)."""
    pids = list(pids)
    deadline = time.monotonic() + seconds
    while alive(pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
