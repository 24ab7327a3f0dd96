"""One small adapter per library: open a pool, map a function over a list, close the pool.

Each adapter uses the library's natural map with its default chunking, except where the
default is one task per message and the docs only say "use a larger chunksize for long
inputs" (ProcessPoolExecutor, pebble): there we use the rule multiprocessing.Pool.map uses
by default, ``ceil(len(items) / (4 * workers))``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from .workloads import Task


def mp_chunksize(n_items: int, workers: int) -> int:
    """multiprocessing.Pool.map's default chunksize."""
    chunksize, extra = divmod(n_items, 4 * workers)
    return max(1, chunksize + bool(extra))


class Peer:
    """A library under test. ``requires`` names the distribution it needs, if any."""

    name = ""
    requires = ""

    def __init__(self) -> None:
        self.workers = 1

    def open(self, workers: int) -> Any:
        self.workers = workers
        return None

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        raise NotImplementedError

    def close(self, pool: Any) -> None:
        return None


class Serial(Peer):
    name = "serial"

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return [fn(x) for x in items]


class MpPool(Peer):
    name = "mp-pool"

    def open(self, workers: int) -> Any:
        import multiprocessing

        return multiprocessing.Pool(workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return pool.map(fn, items)  # default chunksize (see mp_chunksize)

    def close(self, pool: Any) -> None:
        pool.close()
        pool.join()


class CfProcess(Peer):
    name = "cf-process"

    def open(self, workers: int) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        super().open(workers)
        return ProcessPoolExecutor(workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        # The default chunksize=1 sends one message per task; see the module docstring.
        return list(pool.map(fn, items, chunksize=mp_chunksize(len(items), self.workers)))

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
    name, requires = "joblib-loky", "joblib"

    def open(self, workers: int) -> Any:
        from joblib import Parallel

        return Parallel(n_jobs=workers, backend="loky").__enter__()

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        from joblib import delayed

        return list(pool(delayed(fn)(x) for x in items))  # batch_size="auto"

    def close(self, pool: Any) -> None:
        from joblib.externals.loky import reusable_executor

        pool.__exit__(None, None, None)
        # loky keeps its workers for reuse across Parallel calls; shut them down here.
        executor = reusable_executor._executor
        if executor is not None:
            executor.shutdown(wait=True)


class Mpire(Peer):
    name, requires = "mpire", "mpire"

    def open(self, workers: int) -> Any:
        from mpire import WorkerPool

        return WorkerPool(n_jobs=workers, keep_alive=True)  # keep workers between maps

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return pool.map(fn, items)  # default chunking: n_jobs * 64 splits

    def close(self, pool: Any) -> None:
        pool.stop_and_join()


class Pebble(Peer):
    name, requires = "pebble", "pebble"

    def open(self, workers: int) -> Any:
        from pebble import ProcessPool

        super().open(workers)
        return ProcessPool(max_workers=workers)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        # pebble's default chunksize is 1 too; see the module docstring.
        chunksize = mp_chunksize(len(items), self.workers)
        return list(pool.map(fn, items, chunksize=chunksize).result())

    def close(self, pool: Any) -> None:
        pool.close()
        pool.join()


class Corework(Peer):
    name, requires, engine = "corework-process", "corework", "process"

    def open(self, workers: int) -> Any:
        import corework

        return corework.Pool(workers, engine=self.engine)

    def map(self, pool: Any, fn: Task, items: list[Any]) -> list[Any]:
        return list(pool.imap(fn, items))  # chunksize="auto"

    def close(self, pool: Any) -> None:
        pool.shutdown(wait=True)


class CoreworkThread(Corework):
    name, engine = "corework-thread", "thread"


PEERS: dict[str, type[Peer]] = {
    p.name: p
    for p in (Serial, MpPool, CfProcess, CfThread, JoblibLoky, Mpire, Pebble, Corework,
              CoreworkThread)
}


def missing(name: str) -> str:
    """Why peer ``name`` cannot run here ("" if it can)."""
    requires = PEERS[name].requires
    if not requires:
        return ""
    try:
        importlib.import_module(requires)
    except ImportError as exc:
        return f"not installed ({exc})"
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
