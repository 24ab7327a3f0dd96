"""The experiments of ``corework demo``: each claim of the lesson, measured here.

Every timed workload runs serially and through ``corework.map`` on threads, processes and
(where this Python has them) sub-interpreters; a time is the best of ``repeats`` runs,
the one least disturbed by whatever else shares the machine. A pool's start is part of
each parallel time, as it is for anyone who calls ``map`` once. A run that fails records
its error instead of a time, and the demo goes on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import psutil

import corework as cw

from . import freethreaded as _demo_freethreaded
from .freethreaded import best_of, calibrate, gil_enabled, square_loop
from .records import Race, Results, Settings, Startup, Timing

__all__ = ["ENGINES", "find_free_threaded", "measure"]

#: The engines every workload runs on, besides serially.
# Sub-interpreters cannot import the corework package (it loads C extensions they refuse),
# so the demo's task functions travel by value rather than by reference to these modules.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(_demo_freethreaded)

ENGINES = ("thread", "process", "interpreter")
FREE_THREADED_ENV = "COREWORK_FREE_THREADED_PYTHON"
CPU_TASK_SECONDS = 0.25  # one cpu or native task, before --scale
IO_STEPS = 10  # (i * i; sleep) steps per io task, before --scale
IO_SLEEP = 0.02
MATRIX = 512  # the native task multiplies MATRIX x MATRIX matrices
RACE_INCREMENTS = 2000  # per thread, before --scale


# -- the tasks -------------------------------------------------------------------------

def square_numbers(steps: int) -> None:
    """I/O-bound: the lesson's ``square_numbers``: ``i * i`` then a sleep, ``steps`` times."""
    for i in range(steps):
        i * i  # the lesson's point: a little work, then a wait
        time.sleep(IO_SLEEP)


def matmul(repeats: int) -> float:
    """Native: numpy matrix products, which run in BLAS with the GIL released."""
    import numpy as np

    a = np.full((MATRIX, MATRIX), 1.0 / MATRIX)
    product = a
    for _ in range(repeats):
        product = a @ a
    return float(product[0, 0])


def _pid_after_a_pause(_: int) -> int:
    """Holds a worker long enough that each of ``workers`` tasks gets its own."""
    time.sleep(0.1)
    return os.getpid()


def _bump(counter: list[int], guard: contextlib.AbstractContextManager[Any], times: int) -> int:
    """Read, yield, write: a blocking call between the read and the write (here
    ``sleep(0)``; in real code a log line, a socket, a lock) lets another thread in."""
    for _ in range(times):
        with guard:
            value = counter[0]
            time.sleep(0)
            counter[0] = value + 1
    return times


# -- the experiments -------------------------------------------------------------------

def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def probe_interpreters() -> str:
    """"" where ``engine="interpreter"`` runs a task here, else why not."""
    try:
        cw.map(abs, [-1], engine="interpreter", workers=1)
    except Exception as exc:
        return _error(exc)
    return ""


def _workload(name: str, fn: Callable[[int], Any], size: int, *, tasks: int,
              engines: Sequence[str], repeats: int) -> list[Timing]:
    """``tasks`` tasks of ``size``: serially and on each engine, in ``repeats`` rounds that
    take turns (a burst of load elsewhere then hits one round of each, not every round of
    one), keeping each runner's best time."""
    items = [size] * tasks
    runs: dict[str, Callable[[], Any]] = {"serial": lambda: [fn(n) for n in items]}
    for engine in engines:
        runs[engine] = functools.partial(cw.map, fn, items, engine=engine, workers=tasks,
                                         chunksize=1)
    best: dict[str, float] = {}
    errors: dict[str, str] = {}
    for _ in range(max(1, repeats)):
        for runner, run in runs.items():
            if runner in errors:
                continue
            try:
                seconds = best_of(1, run)
            except Exception as exc:
                if runner == "serial":
                    raise  # a bug here, not a limit of an engine
                errors[runner] = _error(exc)
            else:
                best[runner] = min(seconds, best.get(runner, seconds))
    serial = best["serial"]
    return [Timing(name, runner, best.get(runner), serial, errors.get(runner, ""))
            for runner in runs]


def _native(settings: Settings, engines: Sequence[str]) -> list[Timing]:
    """The matmul workload, with BLAS held to one thread per worker, so that any speedup
    comes from running several workers at once, not from BLAS's own threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        matmul(1)  # warm up: import numpy, load BLAS
        once = best_of(3, lambda: matmul(10)) / 10
        size = max(1, round(CPU_TASK_SECONDS * settings.scale / once))
        return _workload("native", matmul, size, tasks=settings.workers, engines=engines,
                         repeats=settings.repeats)


def _first_result(engine: str, workers: int) -> float:
    started = time.perf_counter()
    with cw.Pool(workers, engine=engine) as pool:
        pool.submit(int).result()
        return time.perf_counter() - started


def _memory_per_worker(engine: str, workers: int) -> tuple[float, str]:
    """USS of each worker process, or for workers inside this process its RSS growth."""
    me = psutil.Process()
    before = me.memory_info().rss
    with cw.Pool(workers, engine=engine) as pool:
        pids = set(pool.map(_pid_after_a_pause, range(workers)))
        if pids != {os.getpid()}:
            uss = [psutil.Process(pid).memory_full_info().uss for pid in pids]
            return statistics.median(uss), "USS of a worker process"
        grown = me.memory_info().rss - before
    return max(0, grown) / workers, "this process's RSS growth / workers"


def _startup(engine: str, settings: Settings) -> Startup:
    try:
        first = _first_result(engine, settings.workers)
        warm = min(_first_result(engine, settings.workers)
                   for _ in range(max(1, settings.startups - 1)))
        memory, how = _memory_per_worker(engine, settings.workers)
    except Exception as exc:
        return Startup(engine, None, None, None, error=_error(exc))
    return Startup(engine, first, warm, memory, how)


def _race(settings: Settings) -> Race:
    """The lost update, on ``corework.map(engine="thread")``: without a lock and with."""
    times = max(50, round(RACE_INCREMENTS * settings.scale))
    workers = max(2, settings.workers)
    counts = []
    for guard in (contextlib.nullcontext(), threading.Lock()):
        counter = [0]
        task = functools.partial(_bump, counter, guard)
        cw.map(task, [times] * workers, engine="thread", workers=workers, chunksize=1)
        counts.append(counter[0])
    return Race(times * workers, counts[0], counts[1])


def find_free_threaded() -> str | None:
    """A free-threaded CPython on this machine: ``$COREWORK_FREE_THREADED_PYTHON``, or one
    built by ``scripts/build-python.sh`` into ``~/.cache/corework/pythons``."""
    named = os.environ.get(FREE_THREADED_ENV)
    cache = Path.home() / ".cache" / "corework" / "pythons"
    candidates = [named] if named else []
    candidates += [str(cache / v / "bin" / f"python{v}") for v in ("3.14t", "3.13t")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _subprocess_env() -> dict[str, str]:
    """Our environment, without a forced GIL, and with corework's source on the path when
    this is a source checkout (the other Python may not have corework installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    src = Path(__file__).resolve().parents[2]
    if src != Path(sysconfig.get_paths()["purelib"]).resolve():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def _free_threaded(python: str, settings: Settings) -> tuple[list[Timing], str]:
    """The cpu workload serially and on threads, in the free-threaded ``python``."""
    command = [python, _demo_freethreaded.__file__, "--workers", str(settings.workers),
               "--seconds", str(CPU_TASK_SECONDS * settings.scale),
               "--repeats", str(settings.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=_subprocess_env(), check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{python} failed: {last}")
    found = json.loads(done.stdout)
    label = f"CPython {found['python']} free-threaded ({python})"
    if found["gil"]:
        raise RuntimeError(f"{python} runs with the GIL enabled")
    if found["via"] != "corework":
        label += f"; threads from {found['via']}"
    serial = float(found["serial"])
    return [Timing("cpu-ft", "serial", serial, serial),
            Timing("cpu-ft", "thread", float(found["threads"]), serial)], label


def _free_threading(results: Results) -> None:
    if not results.gil:
        results.notes["free-threaded"] = "this Python runs without the GIL: see the cpu row"
        return
    python = find_free_threaded()
    if python is None:
        results.notes["free-threaded"] = (
            f"no free-threaded interpreter found (set {FREE_THREADED_ENV}, or build one: "
            "scripts/build-python.sh 3.14t)")
        return
    try:
        timings, results.free_threaded = _free_threaded(python, results.settings)
    except Exception as exc:
        results.notes["free-threaded"] = _error(exc)
    else:
        results.timings += timings


def _busy(cores: int) -> str:
    """A warning when other programs already kept the cores busy as the demo started."""
    with contextlib.suppress(OSError, AttributeError):
        load = os.getloadavg()[0]
        if load >= 0.5 * cores:
            return (f"this machine was busy (load average {load:.1f} on {cores} cores) as the "
                    "demo started: parallel speedups may read low; best-of runs soften that")
    return ""


def measure(settings: Settings, say: Callable[[str], None] = lambda _: None) -> Results:
    """Run every experiment; ``say`` hears what is running (for a progress line)."""
    results = Results(settings, sys.version.split()[0], gil_enabled())
    busy = _busy(settings.cores)
    if busy:
        results.notes["busy"] = busy
    say("start-up and memory")
    # Processes first: corework forks its launcher from this process only while it has a
    # single thread (else it must spawn one, and every worker imports this module anew).
    # Thread pools, sub-interpreters and numpy's BLAS all start threads.
    results.startups = [_startup("process", settings)]
    engines = ["thread", "process"]
    unavailable = probe_interpreters()
    if unavailable:
        results.notes["interpreter"] = f"not available here: {unavailable}"
    else:
        engines.append("interpreter")
    results.startups += [_startup(engine, settings) for engine in engines if engine != "process"]
    say("cpu")
    results.timings += _workload("cpu", square_loop, calibrate(CPU_TASK_SECONDS * settings.scale),
                                 tasks=settings.workers, engines=engines,
                                 repeats=settings.repeats)
    say("io")
    steps = max(1, round(IO_STEPS * settings.scale))
    results.timings += _workload("io", square_numbers, steps, tasks=settings.io_tasks,
                                 engines=engines, repeats=settings.io_repeats)
    say("native")
    try:
        results.timings += _native(settings, engines)
    except ImportError as exc:
        results.notes["native"] = f"skipped: {exc} (pip install numpy)"
    say("free-threaded")
    _free_threading(results)
    say("race")
    results.race = _race(settings)
    return results
