"""The benchmark workloads: what each runs and checks, and the fault workloads' tasks.

The timed workloads' task functions are in :mod:`benchmarks.tasks`; the warm-up, crash
and timeout tasks are here. Like that module, this one imports nothing heavy, so that
every library can pickle its tasks by reference and a case pays for numpy only where the
workload uses it.
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import (
    BIGDATA_ITEMS,
    bigdata_sums,
    bigdata_task,
    cpu_sum,
    cpu_task,
    io_task,
    square,
    svd_task,
)

#: Machine-dependent sizes, measured once per run by :func:`calibrate`.
Params = dict[str, int]
Task = Callable[[Any], Any]
Job = tuple[Task, list[Any]]


def bigdata_array(params: Params) -> Any:
    """``arange(BIGDATA_ITEMS)`` as float64: every page written, and an exact known sum."""
    import numpy as np

    return np.arange(BIGDATA_ITEMS, dtype=np.float64)


def _bigdata_ok(params: Params, results: list[Any]) -> bool:
    return results == bigdata_sums(4)


def warm_task(x: int, module: str = "") -> int:
    """Warm-up: sleeps a little so that every worker gets one, and imports ``module``
    there, so that neither worker start nor imports land in the timed region."""
    if module:
        importlib.import_module(module)
    time.sleep(0.02)
    return x


#: The task that fails in the crash workload, and the one that hangs in the timeout one.
CRASHING, HANGING = 5, 0


def crash_stamp(pid: int | None = None) -> Path:
    """Where the crashing task of the case process ``pid`` (this one by default) writes
    ``time.monotonic()`` (system-wide on Linux) as it exits, so that the case can tell how
    long the library took to report the crash."""
    return Path(tempfile.gettempdir()) / f"corework-bench-crash-{pid or os.getpid()}"


def crash_task(x: int, stamp: str) -> int:
    """Task #5 kills its worker with ``os._exit(1)``; the others return ``x`` after 20 ms."""
    if x == CRASHING:
        Path(stamp).write_text(repr(time.monotonic()), encoding="utf-8")
        os._exit(1)
    time.sleep(0.02)
    return x


def slow_task(x: int) -> int:
    """Task #0 sleeps 60 s; the others return ``x`` after 20 ms."""
    time.sleep(60.0 if x == HANGING else 0.02)
    return x


def _anything(params: Params, results: list[Any]) -> bool:
    """No check: a crash or timeout case counts the other tasks' correct results itself."""
    return True


@dataclass(frozen=True)
class Workload:
    """One workload: what the timed call runs, how to check its results, and limits."""

    name: str
    what: str  # one line that heads the workload's table
    job: Callable[[Params], Job]
    check: Callable[[Params, list[Any]], bool] = _anything
    workers: int | None = None  # None: os.cpu_count()
    timeout: float = 60.0  # hard limit, seconds, for one case (one repeat) in its process
    budget: float = 30.0  # seconds of repeats after which a case stops repeating
    warm_module: str = ""  # imported in every worker during warm-up
    skip: frozenset[str] = frozenset()  # peers this workload does not apply to
    startup: bool = False  # time pool creation + first result, and shutdown
    efficiency: bool = False  # report serial_time / (time * workers)
    # A fault workload: task #bad fails, every other task returns its input; the case
    # collects one outcome per task (see Peer.outcomes) instead of checking a map.
    bad: int | None = None
    task_timeout: float | None = None  # per-task limit, where the library has one
    excluded: Mapping[str, str] = field(default_factory=dict)  # peer: why it cannot run
    api: Mapping[str, str] = field(default_factory=dict)  # peer: the calls it is timed with
    # Data made in the case process before anything is timed, handed to every task the
    # library's own way (Peer.map_shared: the task is fn(data, item)); the case then also
    # samples the process tree's memory during the timed map (see benchmarks.memory).
    data: Callable[[Params], Any] | None = None
    data_mb: int = 0  # its size, for the report's "x data" column

    def applies(self, peer: str, data_only: bool, only: frozenset[str] = frozenset()) -> bool:
        """Whether the workload runs ``peer`` at all (else it is left out of the table):
        ``data_only`` peers need shared data; ``only`` names the workloads a peer is for."""
        return (peer not in self.skip and (self.data is not None or not data_only)
                and (not only or self.name in only))

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    def warm(self) -> Job:
        """The small map run on a fresh pool before the timed one."""
        return functools.partial(warm_task, module=self.warm_module), list(
            range(2 * self.worker_count())
        )


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "tiny", "100,000 calls of x*x on a warm pool: per-task overhead and chunking",
            job=lambda p: (square, list(range(100_000))),
            check=lambda p, r: r == [x * x for x in range(100_000)],
            timeout=60.0,
        ),
        Workload(
            "cpu", "16 pure-Python tasks of ~0.2 s on a warm pool: parallel efficiency",
            job=lambda p: (functools.partial(cpu_task, loops=p["cpu_loops"]), list(range(16))),
            check=lambda p, r: r == [cpu_sum(p["cpu_loops"]) + k for k in range(16)],
            efficiency=True,
        ),
        Workload(
            "numpy", "16 SVDs of ~0.1 s each (GIL released) on a warm pool: threads vs processes",
            job=lambda p: (functools.partial(svd_task, size=p["svd_size"]), list(range(16))),
            check=lambda p, r: [s for s, _ in r] == list(range(16)) and all(v > 0 for _, v in r),
            warm_module="numpy", budget=12.0,  # plain process pools oversubscribe BLAS
        ),
        Workload(
            "io", "8 tasks of 20 x (i*i; sleep 50 ms), 8 workers (serial would take 8 s)",
            job=lambda p: (io_task, list(range(8))),
            check=lambda p, r: r == list(range(8)),
            workers=8, timeout=30.0, skip=frozenset({"serial"}),
        ),
        Workload(
            "bigdata", "a 200 MB float64 array read whole by 4 tasks on a warm pool: "
            "wall time, and peak memory of the process tree over the caller's",
            job=lambda p: (bigdata_task, list(range(4))),
            check=_bigdata_ok, workers=2, warm_module="numpy", data=bigdata_array, data_mb=200,
            skip=frozenset({"cf-thread", "corework-thread", "pebble"}),
            api={"serial": "a loop in the caller",
                 "mp-pool": "starmap(fn, [(a, i)...]): a is pickled into each task",
                 "cf-process": "map(fn, [a]*4, range(4)): a is pickled into each chunk",
                 "joblib-loky": "Parallel()(delayed(fn)(a, i)...): auto memmap of a",
                 "mpire": "WorkerPool(shared_objects=a): a reaches the workers by fork "
                          "when they start, before the timed map",
                 "corework-process": "map(fn, [a]*4, range(4)): automatic shared memory",
                 "corework-share": "ref = cw.share(a) (timed), then map(fn, [ref]*4, range(4))",
                 "corework-empty": "a = cw.empty(...) filled in place (not timed, as arange "
                                   "is not for the others), then map(fn, [a]*4, range(4))"},
        ),
        Workload(
            "startup", "pool creation to the first result of one x*x, then shutdown",
            job=lambda p: (square, [3]),
            check=lambda p, r: r == [9],
            timeout=30.0, skip=frozenset({"serial"}), startup=True,
        ),
        Workload(
            "crash", "20 tasks of 20 ms on a warm pool; task #5 calls os._exit(1)",
            job=lambda p: (functools.partial(crash_task, stamp=str(crash_stamp())),
                           list(range(20))),
            timeout=20.0, skip=frozenset({"serial"}), bad=CRASHING,
            excluded=dict.fromkeys(("cf-thread", "corework-thread"),
                                   "os._exit in a thread would end the benchmark itself"),
            api={"mp-pool": "map", "cf-process": "submit + result()", "joblib-loky": "Parallel",
                 "mpire": "map", "pebble": "schedule + result()",
                 "corework-process": "submit + result()",
                 "corework-map-return": 'cw.map(fn, items, errors="return"), whole call',
                 "corework-map-return-process": 'cw.map(fn, items, engine="process", '
                                                'errors="return"), whole call',
                 "corework-imap-return": 'cw.imap(fn, items, errors="return"), whole call'},
        ),
        Workload(
            "timeout", "8 tasks on a warm pool; task #0 sleeps 60 s, the others 20 ms; "
            "1 s timeout per task",
            job=lambda p: (slow_task, list(range(8))),
            timeout=20.0, skip=frozenset({"serial"}), bad=HANGING, task_timeout=1.0,
            api={"mp-pool": "map_async().get(timeout=1), for the whole call",
                 "cf-process": "submit + result(timeout=1)",
                 "cf-thread": "submit + result(timeout=1)",
                 "joblib-loky": "Parallel(timeout=1)", "mpire": "map(task_timeout=1)",
                 "pebble": "schedule(timeout=1) + result()",
                 "corework-process": "Pool(timeout=1) + submit + result()",
                 "corework-thread": "Pool(timeout=1) + submit + result(); the thread stuck "
                                    "in sleep is abandoned, not stopped"},
        ),
    )
}


def _fit(run: Callable[[int], object], n: int, target: float, exponent: float) -> int:
    """Scale ``n`` until ``run(n)`` takes about ``target`` seconds (cost ~ n**exponent).

    Each round times ``run`` thrice and keeps the fastest; the answer is the larger of the
    last two rounds' estimates, as a stall on a shared machine only makes one too small.
    """
    run(n)  # warm-up: imports, first-call allocations
    estimates = []
    for _ in range(4):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run(n)
            best = min(best, time.perf_counter() - start)
        n = max(1, round(n * (target / best) ** (1 / exponent)))
        estimates.append(n)
    return max(estimates[-2:])


def calibrate() -> Params:
    """Size the cpu and numpy tasks for this machine: ~0.2 s and ~0.1 s run serially."""
    loops = _fit(lambda n: cpu_task(0, n), 100_000, 0.2, 1.0)
    size = _fit(lambda n: svd_task(0, n), 200, 0.1, 3.0)
    return {"cpu_loops": loops, "svd_size": round(size, -1)}


def blas_description() -> str:
    """numpy's BLAS library and its default thread count, for the machine description."""
    import numpy  # noqa: F401  (loads BLAS, so that threadpoolctl can see it)
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
                     for i in threadpool_info()) or "none found"
