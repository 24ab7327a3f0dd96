"""One small adapter per library: open a pool, map a function over a list, close the pool.

Each adapter uses the library's natural map with its default chunking, except where the
default is one task per message and the docs only say "use a larger chunksize for long
inputs" (ProcessPoolExecutor, pebble): there we use the rule multiprocessing.Pool.map uses
by default, ``ceil(len(items) / (4 * workers))``.

The bigdata workload calls :meth:`Peer.map_shared`: every task gets one large object,
passed the way the library passes it best (an ordinary argument unless it has a way of
its own).

The crash and timeout workloads call :meth:`Peer.outcomes` instead: one outcome per task,
through the library's futures where it has them, else through its map (whose one
exception then stands for every task). ``task_timeout`` is given to the library where it
takes one; None (every other workload) leaves each library's defaults alone.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .workloads import Task


@dataclass
class Outcome:
    """What the caller got for one task: a value or an exception, and when (monotonic)."""

    value: Any = None
    error: Exception | None = None
    at: float = field(default_factory=time.monotonic)


def collect(futures: list[Future[Any]], timeout: float | None = None) -> list[Outcome]:
    """Each future's outcome, waiting ``timeout`` seconds on each in turn; ``at`` is
    when the future finished (or when waiting for it gave up)."""
    finished: dict[Future[Any], float] = {}

    def stamp(future: Future[Any]) -> None:
        finished[future] = time.monotonic()

    for future in futures:
        future.add_done_callback(stamp)
    outcomes = []
    for future in futures:
        try:
            outcome = Outcome(future.result(timeout))
        except Exception as exc:
            outcome = Outcome(error=exc)
        outcome.at = finished.get(future, outcome.at)
        outcomes.append(outcome)
    return outcomes


def mp_chunksize(n_items: int, workers: int) -> int:
    """multiprocessing.Pool.map's default chunksize."""
    chunksize, extra = divmod(n_items, 4 * workers)
    return max(1, chunksize + bool(extra))


class Peer:
    """A library under test.

    ``module`` is imported before anything is timed (the startup workload times pool
    creation, not imports); ``requires`` names the distribution it needs, if any;
    ``python``: the oldest Python it runs on; ``data_only``: the case applies only to
    workloads with shared data; ``only``: if not empty, the only workloads it applies to.
    ``cold``: each map is a whole one-call map that opens and closes its own pool, so the
    case times it without a pool opened first or a warm-up map.
    """

    name = ""
    module = ""
    requires = ""
    python: tuple[int, int] = (3, 0)
    data_only = False
    only: frozenset[str] = frozenset()
    cold = False

    def __init__(self, task_timeout: float | None = None) -> None:
        self.workers = 1
        self.task_timeout = task_timeout

    def open(self, workers: int) -> Any:
        """A new pool of ``workers`` workers (None for the serial loop)."""
        self.workers = workers
        return None

    def open_shared(self, workers: int, data: Any) -> Any:
        """A new pool for :meth:`map_shared` calls with ``data``: here just :meth:`open`;
        a library that hands such data to its workers when they start does it here."""
        return self.open(workers)

    def adopt(self, data: Any) -> Any:
        """The shared data as this library's user would have made it (before anything is
        timed, and before the memory baseline): here the data itself."""
        return data

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, run on ``pool``, in order."""
        raise NotImplementedError

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        """``[fn(data, x) for x in items]``, run on ``pool``, in order."""
        raise NotImplementedError

    def outcomes(self, pool: Any, fn: Task, items: list[Any]) -> list[Outcome]:
        """One outcome per item; here through :meth:`map`, so one exception for all."""
        try:
            return [Outcome(value) for value in self.map(pool, fn, items)]
        except Exception as exc:
            return [Outcome(error=exc)] * len(items)

    def close(self, pool: Any) -> None:
        """Shut ``pool`` down and wait for its workers to finish."""

    def facts(self, fn: Task) -> dict[str, Any]:
        """What the library decided for the last map of ``fn``, recorded with the time."""
        return {}


class Serial(Peer):
    name = "serial"

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return [fn(x) for x in items]

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        return [fn(data, x) for x in items]


class MpPool(Peer):
    name, module = "mp-pool", "multiprocessing"

    def open(self, workers: int) -> Any:
        import multiprocessing

        return multiprocessing.Pool(workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        if self.task_timeout is not None:  # a limit on the whole call; Pool has no other
            return list(pool.map_async(fn, items).get(self.task_timeout))
        return pool.map(fn, items)  # default chunksize (see mp_chunksize)

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        return pool.starmap(fn, [(data, x) for x in items])

    def close(self, pool: Any) -> None:
        pool.close()
        pool.join()


class CfProcess(Peer):
    name, module = "cf-process", "concurrent.futures"

    def open(self, workers: int) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        super().open(workers)
        return ProcessPoolExecutor(workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        # The default chunksize=1 sends one message per task; see the module docstring.
        return list(pool.map(fn, items, chunksize=mp_chunksize(len(items), self.workers)))

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        chunksize = mp_chunksize(len(items), self.workers)
        return list(pool.map(fn, [data] * len(items), items, chunksize=chunksize))

    def outcomes(self, pool: Any, fn: Task, items: list[Any]) -> list[Outcome]:
        return collect([pool.submit(fn, x) for x in items], self.task_timeout)

    def close(self, pool: Any) -> None:
        pool.shutdown(wait=True)


class CfThread(CfProcess):
    name = "cf-thread"

    def open(self, workers: int) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return list(pool.map(fn, items))  # chunksize does not apply to threads


class JoblibLoky(Peer):
    name, module = "joblib-loky", "joblib"
    requires = module

    def open(self, workers: int) -> Any:
        from joblib import Parallel

        return Parallel(n_jobs=workers, backend="loky", timeout=self.task_timeout).__enter__()

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        from joblib import delayed

        return list(pool(delayed(fn)(x) for x in items))  # batch_size="auto"

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        from joblib import delayed

        # Arrays over max_nbytes (1 MB) go to the workers as memmaps of a file joblib
        # writes in /dev/shm (or a temp folder).
        return list(pool(delayed(fn)(data, x) for x in items))

    def close(self, pool: Any) -> None:
        from joblib.externals.loky import reusable_executor

        pool.__exit__(None, None, None)
        # loky keeps its workers for reuse across Parallel calls; shut them down here.
        executor = reusable_executor._executor
        if executor is not None:
            executor.shutdown(wait=True)


class Mpire(Peer):
    name, module = "mpire", "mpire"
    requires = module

    def __init__(self, task_timeout: float | None = None) -> None:
        super().__init__(task_timeout)
        self.shared = False

    def open(self, workers: int) -> Any:
        from mpire import WorkerPool

        return WorkerPool(n_jobs=workers, keep_alive=True)  # keep workers between maps

    def open_shared(self, workers: int, data: Any) -> Any:
        from mpire import WorkerPool

        # The workers (forked when the first map starts them) inherit ``data``
        # copy-on-write; every task then gets it as its first argument.
        self.shared = True
        return WorkerPool(n_jobs=workers, keep_alive=True, shared_objects=data)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        if self.shared:  # mpire passes the shared objects first: skip them
            fn = functools.partial(_after_shared, fn)
        # default chunking: n_jobs * 64 splits
        return pool.map(fn, items, task_timeout=self.task_timeout)

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        return pool.map(fn, items, task_timeout=self.task_timeout)

    def close(self, pool: Any) -> None:
        pool.stop_and_join()


def _after_shared(fn: Task, shared: Any, x: Any) -> Any:
    return fn(x)


class Pebble(Peer):
    name, module = "pebble", "pebble"
    requires = module

    def open(self, workers: int) -> Any:
        from pebble import ProcessPool

        super().open(workers)
        return ProcessPool(max_workers=workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        # pebble's default chunksize is 1 too; see the module docstring.
        chunksize = mp_chunksize(len(items), self.workers)
        return list(pool.map(fn, items, chunksize=chunksize).result())

    def outcomes(self, pool: Any, fn: Task, items: list[Any]) -> list[Outcome]:
        return collect([pool.schedule(fn, [x], timeout=self.task_timeout) for x in items])

    def close(self, pool: Any) -> None:
        pool.close()
        pool.join()


class Corework(Peer):
    name, module, engine = "corework-process", "corework", "process"
    requires = module

    def open(self, workers: int) -> Any:
        import corework

        return corework.Pool(workers, engine=self.engine, timeout=self.task_timeout)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return list(pool.imap(fn, items))  # chunksize="auto"

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        # Buffers of 256 KiB or more go through shared memory by themselves.
        return list(pool.map(fn, [data] * len(items), items))

    def outcomes(self, pool: Any, fn: Task, items: list[Any]) -> list[Outcome]:
        return collect([pool.submit(fn, x) for x in items])

    def close(self, pool: Any) -> None:
        pool.shutdown(wait=True)


class CoreworkThread(Corework):
    name, engine = "corework-thread", "thread"


class CoreworkInterpreter(Corework):
    """Sub-interpreters, each with its own GIL (3.12+); numpy cannot load in them."""

    name, engine, python = "corework-interpreter", "interpreter", (3, 12)
    only = frozenset({"tiny", "cpu", "io", "startup"})


#: Where a whole ``cw.map`` call (pool start included) is timed, against engine="auto".
ONE_CALL = frozenset({"tiny", "cpu", "numpy", "io"})


class CoreworkMapProcess(Peer):
    """``cw.map(fn, items, engine="process")``: one call, its own pool, nothing warm."""

    name, module, engine = "corework-map-process", "corework", "process"
    requires, only, cold = module, ONE_CALL, True

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        import corework

        return corework.map(fn, items, engine=self.engine, workers=self.workers)


class CoreworkMapThread(CoreworkMapProcess):
    name, engine = "corework-map-thread", "thread"


class CoreworkAuto(CoreworkMapProcess):
    """``cw.map(fn, items, engine="auto")``: every task in worker processes; the worker
    running the first chunk probes it, and tasks found waiting get task threads there.
    Each repeat is a fresh process, so every repeat pays for the probe."""

    name, engine = "corework-auto", "auto"

    def open(self, workers: int) -> Any:
        from corework.api import auto as _auto

        _auto._verdicts.clear()  # a fresh process has none; said here for the reader
        return super().open(workers)

    def facts(self, fn: Task) -> dict[str, Any]:
        from corework.api import auto as _auto
        from corework.engines import gil_enabled

        verdict = _auto.remembered(fn)
        if verdict is None:  # without a GIL auto takes threads, probes nothing, keeps nothing
            return {"engine": "?" if gil_enabled() else "thread (no GIL, no probe)"}
        return {"engine": verdict.engine, **verdict.figures}


class CoreworkMapReturn(Peer):
    """``cw.map(fn, items, errors="return")`` on the default engine, no ``workers=``: one
    call, its own pool; each failed item's exception takes its place in the list. Every
    outcome is known when the call returns, so ``at`` is that moment for all of them."""

    name, module, engine = "corework-map-return", "corework", "auto"
    requires, only, cold = module, frozenset({"crash"}), True

    def outcomes(self, pool: Any, fn: Task, items: list[Any]) -> list[Outcome]:
        import corework

        values = corework.map(fn, items, engine=self.engine, errors="return")
        at = time.monotonic()
        return [Outcome(error=v, at=at) if isinstance(v, Exception) else Outcome(v, at=at)
                for v in values]


class CoreworkMapReturnProcess(CoreworkMapReturn):
    name, engine = "corework-map-return-process", "process"


class CoreworkImapReturn(CoreworkMapReturn):
    """``cw.imap(fn, items, errors="return")``, default engine: each outcome stamped as
    the iterator yields it (in order), so the bad task's says when the crash came out."""

    name = "corework-imap-return"

    def outcomes(self, pool: Any, fn: Task, items: list[Any]) -> list[Outcome]:
        import corework

        outcomes = []
        for v in corework.imap(fn, items, engine=self.engine, errors="return"):
            outcomes.append(Outcome(error=v) if isinstance(v, Exception) else Outcome(v))
        return outcomes


class CoreworkShare(Corework):
    """The process engine, with the data put in shared memory once by ``cw.share``."""

    name, data_only = "corework-share", True

    def map_shared(self, pool: Any, fn: Callable[[Any, Any], Any], data: Any,
                   items: list[Any]) -> list[Any]:
        import corework

        return super().map_shared(pool, fn, corework.share(data), items)


class CoreworkEmpty(Corework):
    """The process engine, with the data made in shared memory from the start: the array
    is ``cw.empty(...)`` filled in place, as a user would make it (not timed, like every
    other peer's ``numpy.arange``), then passed as an ordinary argument."""

    name, data_only = "corework-empty", True

    def adopt(self, data: Any) -> Any:
        import numpy as np

        import corework

        born = corework.empty(data.shape, data.dtype)
        np.copyto(born, data)
        return born


class _OwnLocalCluster:
    """A LocalCluster (``workers`` single-threaded processes on 127.0.0.1) and a client."""

    def __init__(self, workers: int) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None)
        self.client = Client(self.cluster, set_as_default=False)

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class DaskClientMap(Peer):
    """Plain Dask: ``client.map`` (one Dask task per item) on a LocalCluster."""

    name, module, requires = "dask-client-map", "distributed", "distributed"

    def open(self, workers: int) -> Any:
        return _OwnLocalCluster(workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return pool.client.gather(pool.client.map(fn, items, pure=False))

    def close(self, pool: Any) -> None:
        pool.close()


class CoreworkDask(Corework):
    """corework's dask engine on a LocalCluster like DaskClientMap's (started the same way,
    outside the timed part), reached by address."""

    name, engine = "corework-dask", "dask"
    requires = "distributed"

    def open(self, workers: int) -> Any:
        import corework

        self._cluster = _OwnLocalCluster(workers)
        return corework.Pool(workers, engine="dask", timeout=self.task_timeout,
                             address=self._cluster.cluster.scheduler_address)

    def close(self, pool: Any) -> None:
        pool.shutdown(wait=True)
        self._cluster.close()


PEERS: dict[str, type[Peer]] = {
    p.name: p
    for p in (Serial, MpPool, CfProcess, CfThread, JoblibLoky, Mpire, Pebble, Corework,
              CoreworkThread, CoreworkInterpreter, CoreworkShare, CoreworkEmpty, CoreworkDask,
              DaskClientMap, CoreworkMapProcess, CoreworkMapThread, CoreworkAuto,
              CoreworkMapReturn, CoreworkMapReturnProcess, CoreworkImapReturn)
}


def missing(name: str) -> str:
    """Why peer ``name`` cannot run here ("" if it can), without importing anything."""
    peer = PEERS[name]
    if sys.version_info < peer.python:
        return f"needs Python {'.'.join(map(str, peer.python))}+"
    if peer.requires and importlib.util.find_spec(peer.requires) is None:
        return f"{peer.requires} is not installed"
    return ""


def version(name: str) -> str:
    """The version of the distribution peer ``name`` needs ("stdlib" for none)."""
    requires = PEERS[name].requires
    if not requires:
        return "stdlib"
    try:
        return importlib.metadata.version(requires)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
