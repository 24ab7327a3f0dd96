"""The task functions of the timed workloads, in a module that imports only ``time``.

They live in an importable module so that every library can pickle them by reference;
importing this module costs a cold case (see :mod:`benchmarks.cold`) well under a
millisecond, so what a cold case times is the library, not the benchmark. numpy is
imported inside the tasks that need it.
"""

from __future__ import annotations

import time
from typing import Any


def square(x: int) -> int:
    """The tiny task: there is nothing to measure but the per-call overhead."""
    return x * x


def cpu_task(task_id: int, loops: int) -> int:
    """Pure-Python arithmetic that holds the GIL for the whole task."""
    total = 0
    for i in range(loops):
        total += i * i
    return total + task_id


def cpu_sum(loops: int) -> int:
    """``cpu_task(0, loops)`` in closed form."""
    return (loops - 1) * loops * (2 * loops - 1) // 6


def svd_task(seed: int, size: int) -> tuple[int, float]:
    """The SVD of a random ``size`` x ``size`` matrix: BLAS work that releases the GIL.

    Returns the seed (to check the order of results) and the largest singular value.
    """
    import numpy as np

    matrix = np.random.default_rng(seed).standard_normal((size, size))
    return seed, float(np.linalg.svd(matrix)[1][0])


def io_task(task_id: int) -> int:
    """The classic teaching example: a little compute, then a wait that releases the GIL."""
    for i in range(20):
        _ = i * i
        time.sleep(0.05)
    return task_id


def bigdata_task(array: Any, task_id: int) -> float:
    """Reads the whole shared array once; returns its sum plus the task id (checkable)."""
    return float(array.sum()) + task_id


#: The bigdata array: 25 million float64, 200 MB.
BIGDATA_ITEMS = 25_000_000


def bigdata_sums(tasks: int) -> list[float]:
    """What ``bigdata_task`` returns for tasks ``0..tasks-1`` on ``arange(BIGDATA_ITEMS)``."""
    total = BIGDATA_ITEMS * (BIGDATA_ITEMS - 1) // 2  # < 2**53: float64 sums it exactly
    return [float(total + k) for k in range(tasks)]
