"""Engines by name. Adding an engine means one module and one line in ``_FACTORIES``.

Each engine's module is imported when a pool of that kind is made: a thread pool loads
nothing of the process engine (its launcher, sockets, worker code), nor the reverse."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .contract import (
    CallKind,
    ChunkReport,
    ChunkWork,
    Engine,
    EngineEvents,
    FunctionRef,
    Prober,
    WorkerSetup,
)
from .contract import default_workers as default_workers

__all__ = [
    "ENGINES",
    "CallKind",
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
    from .process.engine import ProcessEngine

    return ProcessEngine(workers, setup, start_method or "fork", memory_limit, prober)


def _thread(workers: int, setup: WorkerSetup, start_method: str | None,
            memory_limit: int | None) -> Engine:
    from .local.thread import ThreadEngine

    return ThreadEngine(workers, setup)


def _interpreter(workers: int, setup: WorkerSetup, start_method: str | None,
                 memory_limit: int | None) -> Engine:
    from .local.interpreter import InterpreterEngine  # only where asked for: 3.12+ only

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
    from .process.launcher import get_launcher

    get_launcher()


def gil_enabled() -> bool:
    """False on a free-threaded CPython running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def resolve_engine_name(name: str) -> str:
    """Validate an engine name and settle ``"auto"``: processes, as safe as they come (a
    task that crashes costs that task, never the caller); ``cw.map`` measures its tasks
    to size the pool (see ``api/auto.py``)."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, not {name!r}")
    return "process" if name == "auto" else name


def create_engine(name: str, workers: int, setup: WorkerSetup,
                  start_method: str | None = None, memory_limit: int | None = None,
                  **options: Any) -> Engine:
    """A new, unstarted engine of kind ``name`` (already resolved from "auto"), of
    options checked by ``api/options.py``.

    ``options``: an engine's own, e.g. the dask engine's ``address``, ``sized`` and
    ``max_tasks_per_worker`` (see ``engines/dask/``), the process engine's ``prober``.
    """
    return _FACTORIES[name](workers, setup, start_method, memory_limit, **options)
