"""``engine="auto"`` for :func:`corework.map` and :func:`corework.imap`: measure, then pick.

The first task per worker runs on threads while this module watches how much CPU the
process burns: a task that mostly waits (I/O, sleep) leaves the cores idle; code that
releases the GIL (numpy, hashing, compression) keeps several cores busy at once; pure
Python holds the GIL, so several threads keep just one core busy. Threads win the first
two cases, processes the last. The probes are not thrown away: they finish on their
threads and their results take their places, while the rest of the input runs on the
chosen engine. The verdict is remembered per function (its code) for the life of the
process, so later maps skip the probe.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .engines import default_workers, gil_enabled, start_launcher

#: How long the probe watches the first tasks before deciding (if they have not ended).
PROBE_SECONDS = 0.05
#: Less CPU than this per call (or cores busy, over the probe): the tasks mostly wait.
WAITING_SHARE = 0.5
#: A whole input this short (seconds of serial work) is not worth starting processes for.
TOO_LITTLE_WORK = 0.1
#: The probe's sleeps; wake-ups that make a baseline, and a measurement.
SLEEP = 0.001
BASELINE_SAMPLES = 5
MIN_SAMPLES = 2
#: Waking up this much later than before the probes started: they hold the GIL.
GIL_HELD = 0.0015


@dataclass(frozen=True)
class Verdict:
    """Which engine, why, and the figures measured."""

    engine: str
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


_verdicts: weakref.WeakKeyDictionary[Any, Verdict] = weakref.WeakKeyDictionary()
_verdicts_lock = threading.Lock()


def remembered(fn: Callable[..., Any]) -> Verdict | None:
    """The verdict reached earlier for this function (or another with the same code)."""
    with _verdicts_lock:
        try:
            return _verdicts.get(_key(fn))
        except TypeError:  # not weakly referenceable: never remembered
            return None


def remember(fn: Callable[..., Any], verdict: Verdict) -> None:
    with _verdicts_lock, contextlib.suppress(TypeError):  # not weakly referenceable
        _verdicts[_key(fn)] = verdict


def _key(fn: Callable[..., Any]) -> Any:
    return getattr(fn, "__code__", fn)  # lambdas made anew each call share their code


class Probe:
    """Wraps the task function to time each probed call (wall and this thread's CPU)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.calls: list[tuple[float, float]] = []  # (wall, cpu) of each finished call
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return self.fn(item)
        finally:
            done = (time.perf_counter() - wall, time.thread_time() - cpu)
            with self._lock:
                self.calls.append(done)

    def watch(self, futures: list[Future[Any]], remaining: int | None,
              baseline: float) -> Verdict:
        """Watch the probed calls for PROBE_SECONDS (or until they end) and decide.

        ``baseline``: this thread's wake-up delay before the probes started (see
        :func:`wake_up_delay`)."""
        started, cpu = time.perf_counter(), time.process_time()
        delays = []
        while time.perf_counter() - started < PROBE_SECONDS and not all(
                future.done() for future in futures):
            delays.append(wake_up_delay())
        wall = time.perf_counter() - started
        busy = (time.process_time() - cpu) / wall if wall else 0.0
        running = sum(not future.done() for future in futures)
        enough = len(delays) >= MIN_SAMPLES
        gil_wait = statistics.median(delays) - baseline if enough else None
        with self._lock:
            calls = list(self.calls)
        return decide(calls, running, busy, remaining, len(futures), gil_wait)


def wake_up_delay() -> float:
    """How late this thread gets back from a 1 ms sleep, in seconds.

    Waking up means taking the GIL back. If other threads run Python code, they hold it
    and hand it over only every switch interval (5 ms): the delay is milliseconds. If they
    wait, or run native code that released it, the delay is the scheduler's alone, much
    less even on a busy machine (that part is the baseline, measured before the probes).
    """
    started = time.perf_counter()
    time.sleep(SLEEP)
    return time.perf_counter() - started - SLEEP


def baseline_delay() -> float:
    """This thread's wake-up delay with nothing else running here (see wake_up_delay)."""
    return statistics.median(wake_up_delay() for _ in range(BASELINE_SAMPLES))


def decide(calls: list[tuple[float, float]], running: int, busy: float,  # noqa: PLR0917
           remaining: int | None, threads: int, gil_wait: float | None) -> Verdict:
    """The verdict from what the probe saw (a pure function, for tests).

    ``calls``: (wall, cpu) of the probed calls that ended; ``running``: probes still
    running after the window; ``busy``: cores this process kept busy meanwhile;
    ``remaining``: tasks after the probes, if known; ``threads``: probes started;
    ``gil_wait``: how much later than before the probes this thread got the GIL back
    (None: too few samples, the probes ended at once).
    """
    cores = default_workers()
    figures = {"busy_cores": round(busy, 2), "threads": float(threads),
               "running": float(running)}
    if gil_wait is not None:
        figures["gil_wait_ms"] = round(gil_wait * 1000, 2)
    if not gil_enabled():
        return Verdict("thread", "this CPython runs without a GIL: threads run Python code "
                       "in parallel, with nothing to pickle", figures)
    if threads <= 1 or cores <= 1:
        return Verdict("thread", "one worker or one core: nothing runs in parallel, so "
                       "threads, which pickle nothing, are cheapest", figures)
    if calls:
        wall = sum(w for w, _ in calls)
        task = wall / len(calls)
        figures.update(cpu_share=round(sum(c for _, c in calls) / wall, 2) if wall else 1.0,
                       task_seconds=task)
        if remaining is not None and task * remaining < TOO_LITTLE_WORK:
            return Verdict("thread", f"about {task * remaining * 1000:.0f} ms of work is "
                           "left: less than starting processes costs", figures)
    if gil_wait is None:  # the probes ended before they could be watched: tiny tasks
        held = figures.get("cpu_share", 1.0) >= WAITING_SHARE
    else:
        held = gil_wait >= GIL_HELD
    if held:
        return Verdict("process", "the tasks run Python code that holds the GIL, so only "
                       "processes run them in parallel", figures)
    if busy < WAITING_SHARE:
        return Verdict("thread", f"the tasks kept {busy:.1f} cores busy: they mostly wait, "
                       "and threads overlap waits cheaply", figures)
    return Verdict("thread", f"the tasks kept {busy:.1f} cores busy and left the GIL free "
                   "(native code): threads run them in parallel without pickling", figures)


def auto_chunks(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int,
                ordered: bool, open_pool: Callable[[str], Any],
                run: Callable[[Any, Iterator[Any]], Iterator[list[Any]]]
                ) -> Iterator[list[Any]]:
    """Map ``fn`` over ``items`` on the engine a probe picks; yields lists of results.

    ``open_pool(engine)`` is a context manager for a pool; ``run(pool, items)`` maps the
    function there in chunks (the caller's chunking and ordering options applied).
    """
    verdict = remembered(fn)
    if verdict is None and not gil_enabled():
        verdict = decide([], 0, 0.0, None, workers, None)  # threads, without a probe
        remember(fn, verdict)
    if verdict is not None:
        with open_pool(verdict.engine) as pool:
            yield from run(pool, iter(items))
        return
    remaining = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    source = iter(items)
    firsts = list(itertools.islice(source, workers))
    if remaining is not None:
        remaining -= len(firsts)
    start_launcher()  # while this process has one thread, the launcher costs a fork
    with open_pool("thread") as threads:
        baseline = baseline_delay()
        probe = Probe(fn)
        futures = [threads.submit(probe, item) for item in firsts]
        verdict = probe.watch(futures, remaining, baseline)
        remember(fn, verdict)
        if verdict.engine == "thread":
            yield from _merge(futures, run(threads, source), ordered)
            return
        with open_pool(verdict.engine) as pool:
            yield from _merge(futures, run(pool, source), ordered)


def _merge(firsts: list[Future[Any]], rest: Iterator[list[Any]],
           ordered: bool) -> Iterator[list[Any]]:
    """Chunks of results: the probes' (one each) and the rest's, in input order when
    ``ordered`` (probes first), else as they come; the rest runs while probes finish."""
    pending = deque(firsts)
    held: deque[Any] = deque()  # ordered: rest results that came before the probes ended
    try:
        for value in rest:
            if not ordered:
                for future in [future for future in pending if future.done()]:
                    pending.remove(future)
                    yield [future.result()]
                yield value
                continue
            while pending and pending[0].done():
                yield [pending.popleft().result()]
            if pending:
                held.append(value)
                continue
            while held:
                yield held.popleft()
            yield value
    except Exception:
        while pending:  # the probes' tasks come first: their outcomes, errors included
            yield [pending.popleft().result()]
        while held:
            yield held.popleft()
        raise
    while pending:
        yield [pending.popleft().result()]
    while held:
        yield held.popleft()
