"""``corework demo``: the threads-versus-processes lesson, measured on this machine.

``workers`` tasks of two kinds run serially, on threads and on processes:

* cpu: pure-Python ``i * i`` in a loop. Threads share one GIL, so they gain nothing;
  processes have one GIL each and scale with the cores.
* io: the lesson's ``square_numbers``: ``i * i`` then ``time.sleep``. Waiting releases
  the GIL, so threads and processes both overlap the waits.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._api import map as cw_map
from ..engines import default_workers
from ._args import positive

CPU_TASK_SECONDS = 0.25  # one cpu task, before --scale
IO_STEPS = 10  # sleeps per io task, before --scale
IO_SLEEP = 0.05


def square_loop(iterations: int) -> int:
    """CPU-bound: the lesson's ``i * i`` without the sleep."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def square_numbers(steps: int) -> None:
    """I/O-bound: the lesson's ``square_numbers``: ``i * i`` then a sleep, ``steps`` times."""
    for i in range(steps):
        i * i  # the lesson's point: a little work, then a wait
        time.sleep(IO_SLEEP)


@dataclass
class Row:
    workload: str
    how: str
    seconds: float
    serial: float

    @property
    def speedup(self) -> float:
        return self.serial / self.seconds if self.seconds else float("inf")


def _calibrate(seconds: float) -> int:
    """Loop iterations that take about ``seconds`` here."""
    probe = 200_000
    started = time.perf_counter()
    square_loop(probe)
    return max(1000, int(probe * seconds / (time.perf_counter() - started)))


def _timed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    run(*args, **kwargs)
    return time.perf_counter() - started


def _serially(fn: Callable[[int], Any], tasks: list[int]) -> list[Any]:
    return [fn(n) for n in tasks]


def measure(workers: int, scale: float) -> list[Row]:
    """Run both workloads serially, on threads and on processes."""
    workloads: dict[str, tuple[Callable[[int], Any], int]] = {
        "cpu": (square_loop, _calibrate(CPU_TASK_SECONDS * scale)),
        "io": (square_numbers, max(1, round(IO_STEPS * scale))),
    }
    rows = []
    for name, (fn, size) in workloads.items():
        tasks = [size] * workers
        serial = _timed(_serially, fn, tasks)
        rows.append(Row(name, "serial", serial, serial))
        for engine, label in (("thread", "threads"), ("process", "processes")):
            seconds = _timed(cw_map, fn, tasks, engine=engine, workers=workers, chunksize=1)
            rows.append(Row(name, f"{workers} {label}", seconds, serial))
    return rows


def render(rows: list[Row], workers: int) -> str:
    """The table, with one line of what it shows."""
    lines = [f"{workers} tasks of each kind, {workers} workers "
             f"({default_workers()} cores here)", "",
             f"{'workload':<10}{'run on':<14}{'seconds':>9}{'speedup':>9}"]
    lines += [f"{r.workload:<10}{r.how:<14}{r.seconds:>9.3f}{r.speedup:>8.2f}x" for r in rows]
    lines += ["", "cpu: threads share one GIL, so pure-Python work gains nothing from them;",
              "     processes have a GIL each and run it in parallel.",
              "io:  waiting releases the GIL, so threads overlap waits as well as processes,",
              "     and cost far less to start."]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    workers = args.workers or default_workers()
    print(render(measure(workers, args.scale), workers))
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="the threads-vs-processes lesson, measured on this machine",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--workers", type=positive(int), default=None,
                        help="workers and tasks per workload (default: the cores here)")
    parser.add_argument("--scale", type=positive(float), default=1.0,
                        help="multiply every task's size (default 1.0: about 10 s in all)")
    parser.set_defaults(run=run)
