"""``engine="auto"`` for :func:`corework.map` and :func:`corework.imap`: safe, then sized.

Every task runs in a worker process forked from corework's launcher, so a task that
crashes costs that task (or a retry), never the caller — exactly as on
``engine="process"``. What auto adds is a measurement: the worker that runs the first
chunk *probes* it (see ``engines/_probe.probe_gil``: how late a thread of that process gets
the GIL back while the chunk runs, and how much CPU the process burns). Then:

* code that holds the GIL (pure Python) or keeps a core busy (native code) runs one task
  per worker process, one process per core: the process engine as it is;
* tasks that mostly *wait* (I/O, sleep) get task threads in every worker process, enough
  for as many tasks at once as keep the waits overlapped (:func:`threads_for`).

The probe costs the tasks nothing: the first chunk runs where it would run anyway, and
the rest of the map starts at once; only the extra threads come after the verdict. The
verdict is remembered per function (its code) for the life of the process, so later maps
start at the right size. Only a function, or a first item, that cannot be pickled makes
auto run the map on threads in this process instead, with a warning that names it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import CoreworkWarning, short_repr
from ..engines import default_workers, gil_enabled
from .options import MapOptions, PoolOptions

#: How long the probe watches the first chunk at most (it decides sooner when it can).
PROBE_SECONDS = 0.05
#: Less CPU than this per second of a task's run: the task mostly waits.
WAITING_SHARE = 0.5
#: Wake-ups at least this share of the probe's switch interval late: the GIL is held.
GIL_HELD_SHARE = 0.5
#: Fewer wake-ups than this: the chunk ended before it could be watched (tiny tasks).
MIN_SAMPLES = 2
#: At least this share of the wake-ups late: the tasks hold the GIL, even where the median
#: wake-up was on time (a busy machine takes the task off its core, the GIL free then:
#: 25% late, median 0.1 ms, seen on 3.14 beside two busy loops). As advise's.
LATE_SHARE = 0.1
#: Waiting tasks run this many at once at most, on all worker processes together.
WAITING_MOST = 64


@dataclass(frozen=True)
class Verdict:
    """What the probe found, why, and the figures it measured."""

    waits: bool  # the tasks mostly wait: run many at once on task threads
    reason: str
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        """Where auto runs such tasks, in a word: "process" or "process+threads"."""
        return "process+threads" if self.waits else "process"


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


def decide(figures: dict[str, float], gil: bool | None = None) -> Verdict:
    """The verdict from a probe's figures (a pure function, for tests).

    ``figures``: ``samples`` wake-ups, their median ``delay`` and the ``switch`` interval
    they were taken under, the share of the time the task's thread was ``busy`` (ran or
    waited for a core), and whether the chunk had ``ended`` by then (see
    ``engines/_probe.probe_gil``).
    """
    gil = gil_enabled() if gil is None else gil
    cpu = figures.get("busy", figures.get("cpu_share", 1.0))
    watched = figures.get("samples", 0.0) >= MIN_SAMPLES
    shown = {key: round(value, 4) for key, value in figures.items()}
    if not watched:
        return Verdict(False, "the first tasks ended before they could be watched: tiny "
                       "tasks, batched into chunks, one chunk per core", shown)
    late = figures.get("late_share", 0.0) >= LATE_SHARE  # on a busy machine the median
    if gil and (figures["delay"] >= figures["switch"] * GIL_HELD_SHARE or late):  # may miss
        return Verdict(False, "the tasks run Python code that holds the GIL: one per "
                       "worker process, so they run in parallel", shown)
    if cpu >= WAITING_SHARE:
        what = ("native code that releases the GIL" if gil else
                "code that keeps a core busy (this CPython has no GIL)")
        return Verdict(False, f"the tasks run {what}: one per core", shown)
    return Verdict(True, f"the tasks mostly wait (on a core {cpu:.0%} of the time): many at once, "
                   "on threads inside the worker processes", shown)


def threads_for(verdict: Verdict, processes: int, total: int | None) -> int:
    """Task threads per worker process for tasks of this verdict, ``total`` of them.

    Waiting tasks run as many at once as keep the cores busy (cores / CPU share), but no
    more than WAITING_MOST, nor than there are tasks; the rest one task per core."""
    cores = default_workers()
    if not verdict.waits:
        return 1
    share = max(verdict.figures.get("busy", 0.0), cores / WAITING_MOST)
    wanted = min(WAITING_MOST, math.ceil(cores / share))
    if total is not None:
        wanted = min(wanted, max(total, 1))
    return max(1, math.ceil(wanted / processes))


def shape(workers: int | None, verdict: Verdict | None,
          total: int | None) -> tuple[int, int]:
    """(worker processes, task threads each) for a map on auto: a process per core (or
    per ``workers``, which is how many tasks run at once), threads for waiting tasks.

    Free-threaded CPython too: one process could run every task on threads, but then a
    crash costs every task running in it, and each of them runs again alone before one
    is blamed — a process per task keeps the cost of a crash at one task."""
    processes = workers if workers is not None else default_workers()
    threads = 1
    if verdict is not None and workers is None:
        threads = threads_for(verdict, processes, total)
    return processes, threads


class Prober:
    """Hears the probe's figures in the pool's reader thread; decides and remembers."""

    seconds = PROBE_SECONDS

    def __init__(self, fn: Callable[..., Any], processes: int, total: int | None,
                 grow: bool) -> None:
        self._fn = fn
        self._processes = processes
        self._total = total
        self._grow = grow  # False: the caller gave ``workers``, which is honoured

    def probed(self, figures: dict[str, float]) -> int | None:
        verdict = decide(figures)
        remember(self._fn, verdict)
        if not (self._grow and verdict.waits):
            return None
        return threads_for(verdict, self._processes, self._total)


def auto_chunks(fn: Callable[[Any], Any], items: Iterable[Any], options: MapOptions, *,
                run: Callable[[Callable[[Any], Any], Iterable[Any], MapOptions, PoolOptions],
                              Iterator[list[Any]]]) -> Iterator[list[Any]]:
    """Map ``fn`` over ``items`` on worker processes sized as above; lists of results.

    ``run(fn, items, options, pool_options)`` maps the function on a pool of
    ``pool_options`` (``options.pool`` resized here), in chunks."""
    items, unpicklable = _check_picklable(fn, items)
    if unpicklable is not None:
        warnings.warn(f"{unpicklable}; corework runs this map on threads in this process, "
                      "where a task that crashes takes the program down. Make it picklable "
                      "(a function at module level, plain-data arguments) to run it in "
                      "worker processes.", CoreworkWarning, stacklevel=4)
        yield from run(fn, items, options, options.pool.with_(engine="thread"))
        return
    total = len(items) if isinstance(items, Sequence) else None
    verdict = remembered(fn)
    workers = options.pool.workers if options.pool.sized else None
    processes, threads = shape(workers, verdict, total)
    prober = None if verdict is not None else Prober(fn, processes, total, workers is None)
    yield from run(fn, items, options, options.pool.with_(
        workers=processes, engine="process", threads=threads, prober=prober))


def _check_picklable(fn: Callable[..., Any], items: Iterable[Any]
                     ) -> tuple[Iterable[Any], str | None]:
    """The items (the first one put back if it had to be taken), and what cannot be
    pickled, if the function or the first item cannot (tried without copying their
    buffers: a 200 MB array costs nothing here)."""
    problem = _unpicklable(fn, f"the function {fn!r}")
    if problem is not None:
        return items, problem
    if isinstance(items, Sequence):
        first: list[Any] = list(items[:1])
    else:
        iterator = iter(items)
        first = list(itertools.islice(iterator, 1))
        items = itertools.chain(first, iterator)
    if first:
        problem = _unpicklable(first[0], f"the first item {short_repr(first[0])}")
    return items, problem


def _unpicklable(obj: Any, what: str) -> str | None:
    from ..transport.picklers import check_picklable  # cloudpickle: not for thread pools

    try:
        check_picklable(obj)
    except (Exception, SystemExit, GeneratorExit) as exc:
        return f"cannot send {what} to a worker process ({type(exc).__name__}: {exc})"
    return None
