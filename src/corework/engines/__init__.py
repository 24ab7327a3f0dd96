"""Engines by name: each an :class:`EngineSpec` (how to make it, which options it takes).
Adding an engine means its package and one :func:`register` call.

Each engine's module is imported when a pool of that kind is made: a thread pool loads
nothing of the process engine (its launcher, sockets, worker code), nor the reverse."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

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
    "EngineOptions",
    "EngineSpec",
    "FunctionRef",
    "Prober",
    "WorkerSetup",
    "create_engine",
    "default_workers",
    "engine_names",
    "register",
    "resolve_engine_name",
    "spec_of",
    "start_launcher",
]

#: The engines corework brings ("auto" settles on one of them; see engine_names()).
ENGINES = ("auto", "process", "thread", "interpreter", "dask")


@dataclass(frozen=True)
class EngineOptions:
    """What a pool hands an engine to make: its size, its workers' setup, and the options
    only some engines take (each engine's :class:`EngineSpec` says which)."""

    workers: int
    setup: WorkerSetup
    start_method: str | None = None
    memory_limit: int | None = None  # bytes
    max_tasks_per_worker: int | None = None
    address: str | None = None
    sized: bool = True  # ``workers`` was given (a Dask cluster otherwise sizes itself)
    prober: Prober | None = None  # engine="auto": the probe's listener (api/auto.py)


@dataclass(frozen=True)
class EngineSpec:
    """An engine by name: how to make one, and which of the options beyond every engine's
    it takes (``"start_method"``, ``"address"``, ``"threads"``, ``"memory_limit"``,
    ``"prober"``); ``shares_process`` names what its workers are where they share this
    process (so no ``memory_limit`` can apply); ``before_threads`` readies it while this
    process has one thread (before a progress display's); ``authkey``: its workers get
    this process's multiprocessing authkey. Adding an engine is its package and one
    :func:`register` call."""

    name: str
    create: Callable[[EngineOptions], Engine]
    accepts: frozenset[str] = frozenset()
    shares_process: str | None = None  # "threads", "sub-interpreters"
    before_threads: Callable[[], None] | None = None
    authkey: bool = False  # its workers connect to this process's Managers

    def refuse(self, option: str, given: bool) -> None:
        """Raise ValueError if ``option`` was ``given`` but this engine does not take it."""
        if not given or option in self.accepts:
            return
        if option == "memory_limit" and self.shares_process is not None:
            raise ValueError(f"memory_limit needs engine='process': {self.shares_process} "
                             "share one process")
        takers = " or ".join(f"engine={spec.name!r}" for spec in _SPECS.values()
                             if option in spec.accepts)
        why = " (task threads in each worker process)" if option == "threads" else ""
        raise ValueError(f"{option} applies to {takers}{why}, not {self.name!r}")


def _process(options: EngineOptions) -> Engine:
    from .process.engine import ProcessEngine

    return ProcessEngine(options.workers, options.setup, options.start_method or "fork",
                         options.memory_limit, options.prober)


def _thread(options: EngineOptions) -> Engine:
    from .local.thread import ThreadEngine

    return ThreadEngine(options.workers, options.setup)


def _interpreter(options: EngineOptions) -> Engine:
    from .local.interpreter import InterpreterEngine  # only where asked for: 3.12+ only

    return InterpreterEngine(options.workers, options.setup)


def _dask(options: EngineOptions) -> Engine:
    from .dask import DaskEngine, check_options  # imports Dask only when it is used

    check_options(memory_limit=options.memory_limit,
                  max_tasks_per_worker=options.max_tasks_per_worker)
    return DaskEngine(options.workers, options.setup, options.address, options.sized)


def start_launcher() -> None:
    """Start the process engine's launcher now (a fork while this process has one thread,
    where later, with threads running, it would have to be spawned)."""
    from .process.launchers import get_launcher

    get_launcher()


_SPECS: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> None:
    """Make ``spec.name`` an engine pools can be asked for (replacing one of that name)."""
    _SPECS[spec.name] = spec


for _spec in (
    EngineSpec("process", _process, frozenset({"start_method", "threads", "memory_limit",
                                               "prober"}),
               before_threads=start_launcher, authkey=True),
    EngineSpec("thread", _thread, shares_process="threads"),
    EngineSpec("interpreter", _interpreter, shares_process="sub-interpreters"),
    # Dask's own check_options says why memory_limit and max_tasks_per_worker cannot go
    EngineSpec("dask", _dask, frozenset({"address", "memory_limit"})),
):
    register(_spec)


def engine_names() -> tuple[str, ...]:
    """The names a pool's ``engine`` may take: "auto" and every registered engine's."""
    return ("auto", *_SPECS)


def spec_of(name: str) -> EngineSpec:
    """The spec of engine ``name`` (already resolved from "auto")."""
    return _SPECS[name]


def gil_enabled() -> bool:
    """False on a free-threaded CPython running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def resolve_engine_name(name: str) -> str:
    """Validate an engine name and settle ``"auto"``: processes, as safe as they come (a
    task that crashes costs that task, never the caller); ``cw.map`` measures its tasks
    to size the pool (see ``api/auto.py``)."""
    names = engine_names()
    if name not in names:
        raise ValueError(f"engine must be one of {', '.join(map(repr, names))}, not {name!r}")
    return "process" if name == "auto" else name


def create_engine(name: str, options: EngineOptions) -> Engine:
    """A new, unstarted engine of kind ``name`` (already resolved from "auto"), of
    options checked against its spec by ``api/options.py``."""
    return _SPECS[name].create(options)
