"""``cw.advise``: run a sample on every engine here and say which to use, and why."""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import cloudpickle

from ..engines import gil_enabled
from .options import parse_workers
from .pool import Pool

#: Engines within this share of the fastest count as tied; the cheaper one is advised.
TIE = 0.10
#: Cheapest first: the order ties are broken in.
_CHEAPEST_FIRST = ("thread", "interpreter", "process")


@dataclass(frozen=True)
class Advice:
    """The engine to use for a function, with the figures measured on this machine."""

    engine: str
    reason: str
    workers: int
    seconds: dict[str, float]  # wall time of the sample: "serial" and each engine
    speedup: dict[str, float]  # serial time / engine time
    cpu_share: float  # CPU time / wall time of the tasks, run serially
    gil_held: float  # 0: threads ran fully in parallel; 1: not at all (the GIL)
    pickle_seconds: float  # per task: arguments and result pickled and unpickled
    pickle_bytes: int  # per task: their pickled size
    unavailable: dict[str, str] = field(default_factory=dict)  # engine -> why not

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"use engine={self.engine!r}: {self.reason}", "",
                 f"{'engine':<13}{'seconds':>9}{'speedup':>9}"]
        for name, seconds in self.seconds.items():
            lines.append(f"{name:<13}{seconds:>9.3f}{self.speedup[name]:>8.2f}x")
        for name, why in self.unavailable.items():
            lines.append(f"{name:<13}{'-':>9}{'-':>9}   ({why})")
        lines += ["", f"CPU / wall time of a task: {self.cpu_share:.0%}",
                  f"GIL held (threads' lost parallelism): {self.gil_held:.0%}",
                  f"pickling per task: {self.pickle_seconds * 1e3:.2f} ms, "
                  f"{self.pickle_bytes:,} bytes", f"workers: {self.workers}"]
        return "\n".join(lines)


def advise(fn: Callable[[Any], Any], sample: Iterable[Any], *,
           workers: int | None = None) -> Advice:
    """Run ``fn`` over ``sample`` serially and on each engine available here; return
    (and ``print`` shows) the engine to use, why, and the figures behind it.

    The sample should be a few tasks of the real work (a dozen or so): each engine runs
    all of it, so it takes a few times the sample's serial run time.
    """
    items = list(sample)
    if not items:
        raise ValueError("advise needs a non-empty sample of the function's inputs")
    count = parse_workers(workers)
    serial, cpu_share, results = _serially(fn, items)
    pickle_seconds, pickle_bytes = _pickling(items, results)
    seconds = {"serial": serial}
    unavailable: dict[str, str] = {}
    for engine in _engines(unavailable):
        try:
            seconds[engine] = _timed(fn, items, engine, count)
        except Exception as exc:  # e.g. numpy in a sub-interpreter: it says why
            unavailable[engine] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    speedup = {name: serial / value if value else float("inf")
               for name, value in seconds.items()}
    parallel = min(count, len(items))
    gil_held = _gil_held(speedup.get("thread", 1.0), parallel, cpu_share)
    engine = _fastest(seconds)
    reason = _reason(engine, speedup, cpu_share, gil_held, parallel)
    return Advice(engine, reason, count, seconds, speedup, round(cpu_share, 3),
                  round(gil_held, 3), pickle_seconds, pickle_bytes, unavailable)


def _serially(fn: Callable[[Any], Any], items: list[Any]) -> tuple[float, float, list[Any]]:
    wall, cpu = time.perf_counter(), time.thread_time()
    results = [fn(item) for item in items]
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return wall, min(1.0, cpu / wall) if wall else 1.0, results


def _pickling(items: list[Any], results: list[Any]) -> tuple[float, int]:
    """Per task: the time to pickle and unpickle its argument and result, and the size."""
    started = time.perf_counter()
    size = 0
    for item, result in zip(items, results, strict=True):
        for value in (item, result):
            blob = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(blob)
            size += len(blob)
    return (time.perf_counter() - started) / len(items), size // len(items)


def _engines(unavailable: dict[str, str]) -> list[str]:
    engines = ["thread", "process"]
    if sys.version_info >= (3, 12):
        engines.append("interpreter")
    else:
        unavailable["interpreter"] = "needs Python 3.12+"
    return engines


def _timed(fn: Callable[[Any], Any], items: list[Any], engine: str, workers: int) -> float:
    """Wall time of the sample on a warm pool of ``engine``."""
    with Pool(workers, engine=engine) as pool:
        list(pool.map(abs, range(workers)))  # workers up: start-up is not the work
        started = time.perf_counter()
        list(pool.imap(fn, items, chunksize="auto"))
        return time.perf_counter() - started


def _gil_held(thread_speedup: float, parallel: int, cpu_share: float) -> float:
    """How much parallelism threads lost, for CPU-bound tasks (0 when the tasks wait)."""
    if parallel <= 1 or cpu_share < 0.5:
        return 0.0
    released = (thread_speedup - 1) / (parallel - 1)
    return max(0.0, min(1.0, 1 - released))


def _fastest(seconds: dict[str, float]) -> str:
    best = min(value for name, value in seconds.items() if name != "serial")
    for name in _CHEAPEST_FIRST:
        if name in seconds and seconds[name] <= best * (1 + TIE):
            return name
    return "process"  # pragma: no cover - every engine raised


def _reason(engine: str, speedup: dict[str, float], cpu_share: float, gil_held: float,
            parallel: int) -> str:
    """One sentence a person understands, from the figures."""
    threads = speedup.get("thread", 0.0)
    processes = speedup.get("process", 0.0)
    if not gil_enabled() and engine == "thread":
        return (f"this CPython has no GIL: threads ran it {threads:.1f}x faster than serial, "
                "with nothing to pickle")
    if cpu_share < 0.5:
        return (f"the tasks mostly wait (CPU {cpu_share:.0%} of their time): {engine}s "
                f"overlapped the waits ({speedup[engine]:.1f}x) and threads cost least")
    if engine == "thread" and gil_held >= 0.5:
        return (f"no engine ran it much faster than threads ({threads:.1f}x; processes "
                f"{processes:.1f}x) although it holds the GIL: is this machine busy? "
                "Threads cost least")
    if engine == "thread":
        return (f"the code releases the GIL (threads ran {threads:.1f}x faster on "
                f"{parallel} workers, GIL held {gil_held:.0%}), so threads need no pickling")
    if engine == "interpreter":
        return (f"the code holds the GIL (threads {threads:.1f}x), and sub-interpreters, "
                f"one GIL each, ran it {speedup['interpreter']:.1f}x faster without "
                "processes' costs")
    return (f"the code holds the GIL (threads only {threads:.1f}x, GIL held {gil_held:.0%}); "
            f"processes, one GIL each, ran it {processes:.1f}x faster than serial")
