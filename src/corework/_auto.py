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
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Any

from .engines import default_workers, gil_enabled, start_launcher

#: How long the probe watches the first tasks before deciding (if they have not ended).
PROBE_SECONDS = 0.05
#: Less CPU than this per call (or, over running calls, cores busy): they mostly wait.
WAITING_SHARE = 0.5
#: A whole input this short (seconds of serial work) is not worth starting processes for.
TOO_LITTLE_WORK = 0.1
#: Tasks shorter than this end before the CPU they use can be told apart from noise.
MEASURABLE = 0.005


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

    def watch(self, futures: list[Future[Any]], remaining: int | None) -> Verdict:
        """Watch the probed calls for PROBE_SECONDS (or until they end) and decide."""
        started, cpu = time.perf_counter(), time.process_time()
        wait_for(futures, timeout=PROBE_SECONDS)
        wall = time.perf_counter() - started
        busy = (time.process_time() - cpu) / wall if wall else 0.0
        running = sum(not future.done() for future in futures)
        with self._lock:
            calls = list(self.calls)
        return decide(calls, running, busy, remaining, len(futures))


def decide(calls: list[tuple[float, float]], running: int, busy: float,
           remaining: int | None, threads: int) -> Verdict:
    """The verdict from what the probe saw (a pure function, for tests and ``advise``).

    ``calls``: (wall, cpu) of the probed calls that ended; ``running``: probes still
    running after the window; ``busy``: cores this process kept busy meanwhile;
    ``remaining``: tasks after the probes, if known; ``threads``: probes started.
    """
    cores = default_workers()
    figures = {"busy_cores": round(busy, 2), "threads": float(threads)}
    if not gil_enabled():
        return Verdict("thread", "this CPython runs without a GIL: threads run Python code "
                       "in parallel, with nothing to pickle", figures)
    if threads <= 1 or cores <= 1:
        return Verdict("thread", "one worker or one core: nothing runs in parallel, so "
                       "threads, which pickle nothing, are cheapest", figures)
    if running == 0 and calls:  # short tasks: judge each call's own CPU share
        wall = sum(w for w, _ in calls)
        cpu_share = sum(c for _, c in calls) / wall if wall else 1.0
        task = wall / len(calls)
        figures.update(cpu_share=round(cpu_share, 2), task_seconds=task)
        if cpu_share < WAITING_SHARE:
            return Verdict("thread", f"tasks spend {1 - cpu_share:.0%} of their time "
                           "waiting, and threads overlap waits cheaply", figures)
        if remaining is not None and task * remaining < TOO_LITTLE_WORK:
            return Verdict("thread", f"about {task * remaining * 1000:.0f} ms of work is "
                           "left: less than starting processes costs", figures)
        if task >= MEASURABLE and busy >= 1 + 0.5 * (min(threads, cores) - 1):
            return Verdict("thread", f"{threads} threads kept {busy:.1f} cores busy at once: "
                           "the code releases the GIL (native code), so threads run it in "
                           "parallel without pickling", figures)
        return Verdict("process", "CPU-bound Python: with the GIL, only processes run it "
                       "in parallel", figures)
    active = min(running or threads, cores)
    figures["cpu_share"] = round(busy / active, 2)
    if busy < WAITING_SHARE:  # held GIL or not, a running Python task keeps a core busy
        return Verdict("thread", f"{active} running tasks kept {busy:.1f} cores busy: they "
                       "mostly wait, and threads overlap waits cheaply", figures)
    if busy >= 1 + 0.5 * (active - 1):
        return Verdict("thread", f"{active} threads kept {busy:.1f} cores busy at once: the "
                       "code releases the GIL (native code), so threads run it in "
                       "parallel without pickling", figures)
    return Verdict("process", f"{active} threads kept only {busy:.1f} core busy: the code "
                   "holds the GIL, so only processes run it in parallel", figures)


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
        verdict = decide([], 0, 0.0, None, workers)  # threads, without a probe
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
        probe = Probe(fn)
        futures = [threads.submit(probe, item) for item in firsts]
        verdict = probe.watch(futures, remaining)
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
