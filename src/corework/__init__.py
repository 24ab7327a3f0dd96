"""corework: run Python work on every core, with the classic pitfalls engineered away.

One API (``map``, ``imap``, ``Pool``, ``Process``, ``Thread``) over engines that run
tasks in processes, threads, sub-interpreters or a Dask cluster; ``share`` puts big data
in shared memory once, for every task; ``advise`` measures which engine suits a function.
See the README for a tour.
"""

from ._advise import Advice, advise
from ._api import imap, map
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
from ._future import Future
from ._outcomes import Outcome
from ._pool import Pool
from ._process import Process
from ._share import share
from ._thread import Thread

__version__ = "0.1.0"

__all__ = (
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
    "RemoteTraceback",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "Thread",
    "WorkerCrashed",
    "advise",
    "imap",
    "map",
    "share",
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("corework."):
        _obj.__module__ = "corework"
del _name, _obj
