"""``cw.advise``: run a sample on every engine here and say which to use, and why."""

from __future__ import annotations

import math
import pickle
import sys
import threading
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
#: Tasks shorter than this that no pool ran faster than serial are *too short*: what a
#: pool costs per task (a queue, a thread switch, pickling for a process) is then as much
#: as the task, so no engine can pay; the advice is to run serially or to batch them.
SHORT_TASK_SECONDS = 1e-3
#: A batch of short tasks should take about this long (what the advice's batch size aims at).
BATCH_SECONDS = 0.01
#: A sample that runs serially in less than this is run again (its best run kept), so
#: that a per-task time of microseconds is measured, not one stall's worth of noise.
_SERIAL_AT_LEAST = 0.02
_SERIAL_RUNS = 20
#: Less than this share of a task's time wanting a core (running, or waiting for one):
#: the task mostly waits.
WAITING_SHARE = 0.5
#: More than this share of the serial run spent waiting for a core: the machine is busy,
#: and the timings say less than usual (the verdict rests on what the task does).
BUSY_SHARE = 0.2
#: How long the GIL is watched while the sample runs on a thread, at most.
PROBE_SECONDS = 0.2
#: At least this share of the probe's wake-ups late: the tasks hold the GIL (on a busy
#: machine 15-100% for Python loops; 0-1% for sleeps and numpy, measured on 2 cores
#: beside two busy loops).
LATE_SHARE = 0.1


@dataclass(frozen=True)
class Advice:
    """The engine to use for a function, with the figures measured on this machine.

    With ``too_short`` no pool is worth it: the tasks (``task_seconds`` each, run serially)
    are too short for any engine to gain on serial, and ``engine`` is only the least bad
    one; ``reason`` says what to do instead (run serially, or batch the tasks into
    ``batch`` items each and measure again).
    """

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
    task_seconds: float = 0.0  # per task, run serially (the best of a few runs if short)
    too_short: bool = False  # no pool can pay for tasks this short: run serially or batch
    batch: int = 1  # with too_short: items per batch for a batch of ~BATCH_SECONDS
    holds_gil: bool | None = None  # seen directly: the task's thread kept the GIL
    busy_machine: bool = False  # the tasks waited for a core: the timings are uncertain

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        verdict = "run serially or batch" if self.too_short else f"use engine={self.engine!r}"
        lines = [f"{verdict}: {self.reason}", "",
                 f"{'engine':<13}{'seconds':>9}{'speedup':>9}"]
        for name, seconds in self.seconds.items():
            lines.append(f"{name:<13}{seconds:>9.3f}{self.speedup[name]:>8.2f}x")
        for name, why in self.unavailable.items():
            lines.append(f"{name:<13}{'-':>9}{'-':>9}   ({why})")
        lines += ["", f"time per task, serially: {_duration(self.task_seconds)}",
                  f"CPU / wall time of a task: {self.cpu_share:.0%}",
                  f"GIL held (threads' lost parallelism): {self.gil_held:.0%}",
                  f"pickling per task: {self.pickle_seconds * 1e3:.2f} ms, "
                  f"{self.pickle_bytes:,} bytes", f"workers: {self.workers}"]
        return "\n".join(lines)


_BUSY_NOTE = ("; the machine was busy (the tasks waited for a core {:.0%} of their time): "
              "the timings are uncertain, the verdict rests on what the tasks do")


def advise(fn: Callable[[Any], Any], sample: Iterable[Any], *, workers: int | None = None
           ) -> Advice:
    """Run ``fn`` over ``sample`` serially and on each engine available here; return
    (and ``print`` shows) the engine to use, why, and the figures behind it.

    The sample should be a few tasks of the real work (a dozen or so): each engine runs
    all of it, so it takes a few times the sample's serial run time (a sample that runs
    in under 20 ms is run serially a few more times, to measure its tasks' time).

    Tasks too short for any pool to gain on serial (under 1 ms each, no engine faster)
    get ``too_short=True``: run them serially, or ``batch`` items per task.
    """
    items = list(sample)
    if not items:
        raise ValueError("advise needs a non-empty sample of the function's inputs")
    count = parse_workers(workers)
    serial, cpu_share, waited, results = _serially(fn, items)
    holds_gil = _holds_gil(fn, items) if gil_enabled() else False
    task_seconds = serial / len(items)
    pickle_seconds, pickle_bytes = _pickling(items, results)
    seconds, unavailable = _on_each_engine(fn, items, count, serial)
    speedup = {name: serial / value if value else float("inf") for name, value in seconds.items()}
    parallel = min(count, len(items))
    gil_held = _gil_held(speedup.get("thread", 1.0), parallel, cpu_share)
    if holds_gil is None:  # the sample ended before the GIL could be watched
        holds_gil = gil_held >= 0.5
    too_short = _too_short(task_seconds, speedup)
    busy = waited >= BUSY_SHARE
    batch = max(1, math.ceil(BATCH_SECONDS / task_seconds)) if too_short and task_seconds else 1
    if too_short:
        engine = _fastest(seconds)
        reason = _short_reason(engine, speedup, task_seconds, batch)
    else:
        engine = _suited(seconds, cpu_share, holds_gil)
        reason = _reason(engine, speedup, cpu_share, gil_held, parallel)
    if busy:
        reason += _BUSY_NOTE.format(waited)
    return Advice(engine, reason, count, seconds, speedup, round(cpu_share, 3), round(gil_held, 3),
                  pickle_seconds, pickle_bytes, unavailable, task_seconds, too_short, batch,
                  holds_gil, busy)


def _on_each_engine(fn: Callable[[Any], Any], items: list[Any], count: int, serial: float
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds the sample took serially and on each engine available here; and why each
    other engine is not (e.g. numpy in a sub-interpreter: its error says why)."""
    seconds = {"serial": serial}
    unavailable: dict[str, str] = {}
    for engine in _engines(unavailable):
        try:
            seconds[engine] = _timed(fn, items, engine, count)
        except Exception as exc:
            unavailable[engine] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return seconds, unavailable


def _serially(fn: Callable[[Any], Any], items: list[Any]
              ) -> tuple[float, float, float, list[Any]]:
    """The sample's serial wall time, the share of it its tasks wanted a core (ran, or
    waited for one: a busy machine does not make CPU work look like waiting), the share
    they waited for one, and their results.

    A sample that runs in under ``_SERIAL_AT_LEAST`` is run again (up to ``_SERIAL_RUNS``
    times, or that long in all) and its fastest run kept: a stall on a busy machine only
    makes a run slower, so the fastest is the tasks' own time.
    """
    from ..engines.process.probe import schedstat

    best, wanted, waited = float("inf"), 1.0, 0.0
    results: list[Any] = []
    spent = 0.0
    thread = threading.get_native_id()
    for _ in range(_SERIAL_RUNS):
        wall, cpu, stat = time.perf_counter(), time.thread_time(), schedstat(thread)
        results = [fn(item) for item in items]
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        after = schedstat(thread)
        if wall < best and wall > 0:
            best = wall
            if stat is not None and after is not None:
                ran, queued = after[0] - stat[0], after[1] - stat[1]
                wanted, waited = min(1.0, (ran + queued) / wall), min(1.0, queued / wall)
            else:
                wanted, waited = min(1.0, cpu / wall), 0.0
        spent += wall
        if spent >= _SERIAL_AT_LEAST:
            break
    return best, wanted if best != float("inf") else 1.0, waited, results


def _holds_gil(fn: Callable[[Any], Any], items: list[Any]) -> bool | None:
    """Whether the tasks keep the GIL, seen directly: the sample runs (again and again)
    on a thread while this one wakes up every millisecond for ``PROBE_SECONDS``; while a
    task runs Python code, each wake-up comes a whole switch interval late, whatever else
    the machine does (see engines/_probe). On a busy machine such a task is off its core
    some of the time, the GIL free meanwhile: so it is the share of late wake-ups that
    tells, not their median. None when the sample ended before it could be watched."""
    from ..engines.process.probe import probe_gil

    finished, started, stop = threading.Event(), threading.Event(), threading.Event()
    native: list[int] = []

    def run() -> None:
        native.append(threading.get_native_id())
        started.set()
        try:
            while not stop.is_set():
                for item in items:
                    fn(item)
        except BaseException:  # the serial run raised it already, had it been raised
            pass
        finally:
            finished.set()

    runner = threading.Thread(target=run, name="corework-advise-probe", daemon=True)
    runner.start()
    started.wait()
    try:
        figures = probe_gil(PROBE_SECONDS, finished, native[0], early=False)
    finally:
        stop.set()
        runner.join()
    if figures["samples"] < 2:
        return None
    return figures["late_share"] >= LATE_SHARE


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


def _suited(seconds: dict[str, float], wanted: float, holds_gil: bool) -> str:
    """The engine for what the tasks do, as measured directly: threads for tasks that
    wait or release the GIL; for Python code that holds it, the faster of processes and
    sub-interpreters (never threads, however a busy machine made them time)."""
    if not gil_enabled():
        return _fastest(seconds)
    if wanted < WAITING_SHARE or not holds_gil:
        return "thread"
    gil_free = {name: value for name, value in seconds.items()
                if name in ("process", "interpreter")}
    return _fastest({"serial": seconds["serial"], **gil_free}) if gil_free else "process"


def _fastest(seconds: dict[str, float]) -> str:
    best = min(value for name, value in seconds.items() if name != "serial")
    for name in _CHEAPEST_FIRST:
        if name in seconds and seconds[name] <= best * (1 + TIE):
            return name
    return "process"  # pragma: no cover - every engine raised


def _too_short(task_seconds: float, speedup: dict[str, float]) -> bool:
    """No pool gained on serial, and the tasks are short enough that this is why."""
    pools = [value for name, value in speedup.items() if name != "serial"]
    return task_seconds < SHORT_TASK_SECONDS and max(pools, default=0.0) < 1.0


def _short_reason(engine: str, speedup: dict[str, float], task_seconds: float,
                  batch: int) -> str:
    slowest = min(speedup[name] for name in speedup if name != "serial")
    return (f"the tasks are too short for any pool to pay: {_duration(task_seconds)} each "
            "(run serially), less than what a pool spends handing a task over; the best "
            f"engine, {engine}, ran {1 / speedup[engine]:.1f}x slower than serial, the worst "
            f"{1 / slowest:.0f}x. Run them serially, or batch them (about {batch:,} items "
            f"per task, ~{BATCH_SECONDS * 1e3:.0f} ms of work) and advise on the batched "
            "function")


def _duration(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _reason(engine: str, speedup: dict[str, float], cpu_share: float, gil_held: float,
            parallel: int) -> str:
    """One sentence a person understands, from the figures."""
    threads = speedup.get("thread", 0.0)
    processes = speedup.get("process", 0.0)
    if not gil_enabled() and engine == "thread":
        return (f"this CPython has no GIL: threads ran it {threads:.1f}x faster than serial, "
                "with nothing to pickle")
    if cpu_share < WAITING_SHARE:
        return (f"the tasks mostly wait (on a core {cpu_share:.0%} of their time): threads "
                f"overlap the waits ({threads:.1f}x here) and cost least")
    if engine == "thread":
        return (f"the code releases the GIL (threads ran {threads:.1f}x faster on "
                f"{parallel} workers), so threads need no pickling")
    if engine == "interpreter":
        return (f"the code holds the GIL (threads {threads:.1f}x), and sub-interpreters, "
                f"one GIL each, ran it {speedup['interpreter']:.1f}x faster without "
                "processes' costs")
    return (f"the code holds the GIL (threads only {threads:.1f}x); processes, one GIL "
            f"each, ran it {processes:.1f}x faster than serial")
