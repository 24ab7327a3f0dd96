"""corework: run Python work on every core, with the classic pitfalls engineered away.

One API (``map``, ``imap``, ``Pool``, ``Process``, ``Thread``) over engines that run
tasks in processes, threads, sub-interpreters or a Dask cluster; ``share`` puts big data
in shared memory once, for every task (``empty``/``zeros`` make arrays there from the
start); ``advise`` measures which engine suits a function.
For tools built on it (the ``corework`` command is one): ``ENGINES``, ``default_workers``,
``parse_memory``, ``progress`` and ``Pool.imap_batches``. See the README for a tour.
"""

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
    "default_workers",
    "empty",
    "imap",
    "map",
    "parse_memory",
    "progress",
    "share",
    "zeros",
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("corework."):
        _obj.__module__ = "corework"
del _name, _obj
