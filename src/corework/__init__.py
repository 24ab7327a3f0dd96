"""corework: run Python work on every core, with the classic pitfalls engineered away.

One API (``map``, ``imap``, ``aimap``, ``Pool``, ``Process``, ``Thread``) over engines that run
tasks in processes, threads, sub-interpreters or a Dask cluster; ``share`` puts big data
in shared memory once, for every task (``empty``/``zeros`` make arrays there from the
start); ``advise`` measures which engine suits a function.
For tools built on it (the ``corework`` command is one): ``ENGINES``, ``default_workers``,
``parse_memory``, ``progress`` and ``Pool.imap_batches``. See the README for a tour.

``import corework`` imports nothing else: each name below is imported from its module the
first time it is used (PEP 562), so a script pays only for what it runs.
"""

from __future__ import annotations

# The constant, not typing's: importing typing would cost more than the rest of this file.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._errors import (
        Cancelled,
        CoreworkError,
        CoreworkWarning,
        EngineUnavailable,
        InitializerFailed,
        MemoryLimitExceeded,
        PoolClosed,
        RemoteTraceback,
        SerializationError,
        TaskError,
        TaskTimeout,
        WorkerCrashed,
    )
    from .api.advise import Advice, advise
    from .api.arrays import empty, zeros
    from .api.asyncmap import aimap
    from .api.mapping import imap, map
    from .api.options import parse_memory
    from .api.pool import Pool
    from .api.process import Process
    from .api.progress import Progress, progress
    from .api.share import share
    from .api.thread import Thread
    from .engines import ENGINES, default_workers
    from .scheduling.future import Future
    from .scheduling.outcomes import Outcome

__version__ = "0.1.0"

__all__ = (
    "ENGINES",
    "Advice",
    "Cancelled",
    "CoreworkError",
    "CoreworkWarning",
    "EngineUnavailable",
    "Future",
    "InitializerFailed",
    "MemoryLimitExceeded",
    "Outcome",
    "Pool",
    "PoolClosed",
    "Process",
    "Progress",
    "RemoteTraceback",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "Thread",
    "WorkerCrashed",
    "advise",
    "aimap",
    "default_workers",
    "empty",
    "imap",
    "map",
    "parse_memory",
    "progress",
    "share",
    "zeros",
)

_ERRORS = "._errors"
# Where each public name lives (the same names as the imports above).
_HOMES = {
    "ENGINES": ".engines",
    "Advice": ".api.advise",
    "Cancelled": _ERRORS,
    "CoreworkError": _ERRORS,
    "CoreworkWarning": _ERRORS,
    "EngineUnavailable": _ERRORS,
    "Future": ".scheduling.future",
    "InitializerFailed": _ERRORS,
    "MemoryLimitExceeded": _ERRORS,
    "Outcome": ".scheduling.outcomes",
    "Pool": ".api.pool",
    "PoolClosed": _ERRORS,
    "Process": ".api.process",
    "Progress": ".api.progress",
    "RemoteTraceback": _ERRORS,
    "SerializationError": _ERRORS,
    "TaskError": _ERRORS,
    "TaskTimeout": _ERRORS,
    "Thread": ".api.thread",
    "WorkerCrashed": _ERRORS,
    "advise": ".api.advise",
    "aimap": ".api.asyncmap",
    "default_workers": ".engines",
    "empty": ".api.arrays",
    "imap": ".api.mapping",
    "map": ".api.mapping",
    "parse_memory": ".api.options",
    "progress": ".api.progress",
    "share": ".api.share",
    "zeros": ".api.arrays",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home, __name__), name)
    if getattr(value, "__module__", "").startswith("corework."):
        value.__module__ = "corework"  # as users name it: corework.Pool
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
