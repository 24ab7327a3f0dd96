"""Engines by name. Adding an engine means one module and one line in ``_FACTORIES``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ._base import ChunkReport, ChunkWork, Engine, EngineEvents, FunctionRef, WorkerSetup
from ._base import default_workers as default_workers
from .process import Prober, ProcessEngine
from .thread import ThreadEngine

__all__ = [
    "ENGINES",
    "ChunkReport",
    "ChunkWork",
    "Engine",
    "EngineEvents",
    "FunctionRef",
    "Prober",
    "WorkerSetup",
    "create_engine",
    "default_workers",
    "resolve_engine_name",
    "start_launcher",
]

ENGINES = ("auto", "process", "thread", "interpreter", "dask")


def _process(workers: int, setup: WorkerSetup, start_method: str | None,
             memory_limit: int | None, *, prober: Prober | None = None) -> Engine:
    return ProcessEngine(workers, setup, start_method or "fork", memory_limit, prober)


def _thread(workers: int, setup: WorkerSetup, start_method: str | None,
            memory_limit: int | None) -> Engine:
    if memory_limit is not None:
        raise ValueError("memory_limit needs engine='process': threads share one process")
    return ThreadEngine(workers, setup)


def _interpreter(workers: int, setup: WorkerSetup, start_method: str | None,
                 memory_limit: int | None) -> Engine:
    if memory_limit is not None:
        raise ValueError("memory_limit needs engine='process': sub-interpreters share one "
                         "process")
    from .interpreter import InterpreterEngine  # only where asked for: 3.12+ only

    return InterpreterEngine(workers, setup)


def _dask(workers: int, setup: WorkerSetup, start_method: str | None,
          memory_limit: int | None, *, address: str | None = None, sized: bool = True,
          max_tasks_per_worker: int | None = None) -> Engine:
    from .dask import DaskEngine, check_options  # imports Dask only when it is used

    check_options(memory_limit=memory_limit, max_tasks_per_worker=max_tasks_per_worker)
    return DaskEngine(workers, setup, address, sized)


_FACTORIES: dict[str, Callable[..., Engine]] = {
    "process": _process,
    "thread": _thread,
    "interpreter": _interpreter,
    "dask": _dask,
}


def start_launcher() -> None:
    """Start the process engine's launcher now (a fork while this process has one thread,
    where later, with threads running, it would have to be spawned)."""
    from ._launcher import get_launcher

    get_launcher()


def gil_enabled() -> bool:
    """False on a free-threaded CPython running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def resolve_engine_name(name: str) -> str:
    """Validate an engine name and settle ``"auto"``: processes, as safe as they come (a
    task that crashes costs that task, never the caller); ``cw.map`` measures its tasks
    to size the pool (see ``_auto``)."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, not {name!r}")
    return "process" if name == "auto" else name


def create_engine(name: str, workers: int, setup: WorkerSetup,
                  start_method: str | None = None, memory_limit: int | None = None,
                  **options: Any) -> Engine:
    """A new, unstarted engine of kind ``name`` (already resolved from "auto").

    ``options``: an engine's own, e.g. the dask engine's ``address``, ``sized`` and
    ``max_tasks_per_worker`` (see ``engines/dask.py``), the process engine's ``prober``.
    """
    if setup.threads > 1 and name != "process":
        raise ValueError(f"threads applies to engine='process' (task threads in each worker "
                         f"process), not {name!r}")
    return _FACTORIES[name](workers, setup, start_method, memory_limit, **options)
