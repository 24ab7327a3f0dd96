"""The cpu experiment, runnable by file path in another interpreter (``corework demo``
runs it in a free-threaded CPython found on this machine).

This module imports only the standard library at the top, so that an interpreter without
corework's dependencies can still run it: ``python3.13t _demo_freethreaded.py --workers 2
--seconds 0.25 --repeats 3`` prints one JSON object with the best-of-``repeats`` wall
times of ``workers`` tasks run serially and on ``workers`` threads. Threads come from
``corework.map(engine="thread")`` when corework imports there (``PYTHONPATH`` may point at
a source checkout), from ``concurrent.futures.ThreadPoolExecutor`` otherwise; the output
says which.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["best_of", "calibrate", "gil_enabled", "main", "square_loop"]


def square_loop(iterations: int) -> int:
    """CPU-bound: the lesson's ``i * i``, without the sleep."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def calibrate(seconds: float) -> int:
    """Loop iterations that take about ``seconds`` in this interpreter (best of three)."""
    probe = 100_000
    best = min(_timed(square_loop, probe) for _ in range(3))
    return max(1000, int(probe * seconds / best))


def gil_enabled() -> bool:
    """False on a free-threaded CPython running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def best_of(repeats: int, run: Callable[[], Any]) -> float:
    """The shortest of ``repeats`` wall times of ``run()``: the least disturbed by
    whatever else this machine is doing."""
    return min(_timed(run) for _ in range(max(1, repeats)))


def _timed(run: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def _threads_runner(workers: int) -> tuple[str, Callable[[list[int]], Any]]:
    try:
        import corework
    except ImportError as exc:  # corework's dependencies are not installed here
        from concurrent.futures import ThreadPoolExecutor

        def stdlib(tasks: list[int]) -> Any:
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(square_loop, tasks))
        return f"ThreadPoolExecutor ({exc})", stdlib

    def cw(tasks: list[int]) -> Any:
        return corework.map(square_loop, tasks, engine="thread", workers=workers,
                            chunksize=1)
    return "corework", cw


def measure(workers: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Serial and threaded wall times of ``workers`` cpu tasks of about ``seconds``, each
    the best of ``repeats`` runs taken in turns."""
    tasks = [calibrate(seconds)] * workers
    via, threaded = _threads_runner(workers)
    serial, threads = float("inf"), float("inf")
    for _ in range(max(1, repeats)):
        serial = min(serial, _timed(lambda: [square_loop(n) for n in tasks]))
        threads = min(threads, _timed(threaded, tasks))
    return {"python": sys.version.split()[0], "gil": gil_enabled(), "via": via,
            "serial": serial, "threads": threads}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.workers, args.seconds, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
