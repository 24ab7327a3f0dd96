"""Every option of a pool or of a one-call map, checked once, where it enters the API.

``cw.map``/``cw.imap`` and ``Pool(...)`` each turn their keywords into one frozen
:class:`PoolOptions` (and a map's own into :class:`MapOptions`); from there the options
travel as that object — to the engine as :meth:`PoolOptions.setup`, to the scheduler as
``policy`` — never unpacked into keywords and packed again."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..engines import (
    EngineOptions,
    Prober,
    WorkerSetup,
    default_workers,
    resolve_engine_name,
    spec_of,
)
from ..scheduling.mapjob import Errors, parse_errors
from ..scheduling.policy import TaskPolicy
from .keywords import MapKeywords, PoolKeywords, RunKeywords, names_of, options_of

__all__ = ["MapOptions", "PoolOptions", "parse_chunksize", "parse_memory", "parse_workers"]


@dataclass(frozen=True)
class PoolOptions:
    """A pool's options, valid by construction: build it with :meth:`parse`."""

    workers: int
    engine: str  # resolved: "auto" or an engine's name
    sized: bool  # ``workers`` was given (a Dask cluster is otherwise sized by itself)
    policy: TaskPolicy
    memory_limit: int | None = None  # bytes
    max_tasks_per_worker: int | None = None
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    start_method: str | None = None
    native_threads: int | Literal["auto"] | None = "auto"
    address: str | None = None
    threads: int = 1
    prober: Prober | None = None  # engine="auto": the probe's listener (see api/auto.py)
    relay_logs: bool = True  # process workers' log records go to this process's handlers
    thread_names: str | None = None  # slot threads' name prefix (corework.futures' drop-ins)

    @classmethod
    def parse(cls, workers: int | None, given: Mapping[str, Any], *, call: str = "Pool.__init__",
              prober: Prober | None = None, thread_names: str | None = None) -> PoolOptions:
        """Check every option ``given`` to ``call`` (one clear error naming the first bad
        one); the others have their defaults (see ``keywords``)."""
        return cls._parse(workers, prober, thread_names, **options_of(call, PoolKeywords, given))

    @classmethod
    def _parse(cls, workers: int | None, prober: Prober | None, thread_names: str | None, *,
               engine: str, timeout: float | None, retries: int, backoff: float,
               retry_on: Iterable[type[BaseException]], memory_limit: int | str | None,
               max_tasks_per_worker: int | None, initializer: Callable[..., object] | None,
               initargs: Iterable[Any], start_method: str | None,
               native_threads: int | Literal["auto"] | None, address: str | None,
               threads: int | None, relay_logs: bool) -> PoolOptions:
        name = resolve_engine_name(engine)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, not {type(initializer).__name__}")
        spec_of(name).refuse("start_method", start_method is not None)
        if not isinstance(relay_logs, bool):
            raise TypeError(f"relay_logs must be True or False, not {relay_logs!r}")
        spec_of(name).refuse("address", address is not None)
        options = cls(parse_workers(workers), name, workers is not None,
                      TaskPolicy(timeout, retries, backoff, tuple(retry_on)),
                      parse_memory(memory_limit), max_tasks_per_worker, initializer,
                      tuple(initargs), start_method, native_threads, address,
                      parse_threads(threads), prober, relay_logs, thread_names)
        options.check()
        return options

    def check(self) -> None:
        """The checks that involve several options (run again by :meth:`with_`)."""
        if self.max_tasks_per_worker is not None:
            parse_chunksize(self.max_tasks_per_worker, "max_tasks_per_worker")
            if self.threads > 1 or self.prober is not None:
                raise ValueError("max_tasks_per_worker needs one task thread per worker "
                                 "process (threads=None): a process is recycled between "
                                 "tasks, which threads would share")
        spec = spec_of(self.engine)
        spec.refuse("threads", self.threads > 1)
        spec.refuse("memory_limit", self.memory_limit is not None)
        spec.refuse("prober", self.prober is not None)
        _native_threads(self.native_threads, self.workers * self.threads)

    def with_(self, **changes: Any) -> PoolOptions:
        """A copy with ``changes`` (already valid values: ``auto`` sizing a pool)."""
        options = dataclasses.replace(self, **changes)
        options.check()
        return options

    def for_engine(self) -> EngineOptions:
        """What the engine is made of (see engines.EngineSpec)."""
        return EngineOptions(self.workers, self.setup(), self.start_method, self.memory_limit,
                             self.max_tasks_per_worker, self.address, self.sized, self.prober)

    def setup(self) -> WorkerSetup:
        """What every worker needs before its first task."""
        return WorkerSetup(self.initializer, self.initargs,
                           _native_threads(self.native_threads, self.workers * self.threads),
                           self.threads, elastic=self.prober is not None,
                           authkey=_authkey(self.engine), relay_logs=self.relay_logs,
                           log_levels=_log_levels(self.relay_logs),
                           thread_names=self.thread_names)


@dataclass(frozen=True)
class MapOptions:
    """A one-call map's options: its pool's, and how the map cuts and hands back."""

    pool: PoolOptions
    auto: bool  # engine="auto" (and no Dask address): api/auto.py sizes the pool
    chunksize: int | None  # None: adaptive
    ordered: bool = True
    errors: Errors = "raise"
    progress: object = None  # None, True, or the user's display (see api/progress.py)

    @classmethod
    def parse(cls, call: str, fn: object, given: Mapping[str, Any]) -> MapOptions:
        """Refuse bad arguments at the call, not at the first result."""
        if not callable(fn):
            raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
        options = options_of(call, MapKeywords, given)
        pool_keywords = {name: options[name] for name in names_of(RunKeywords)}
        pool = PoolOptions.parse(options["workers"], pool_keywords, call=call)
        return cls(pool, options["engine"] == "auto" and options["address"] is None,
                   parse_chunksize(options["chunksize"]), options["ordered"],
                   parse_errors(options["errors"]), _progress(options["progress"]))


def parse_chunksize(chunksize: int | Literal["auto"], name: str = "chunksize") -> int | None:
    """``"auto"`` -> None (adaptive); a positive int as is; anything else is an error."""
    if chunksize == "auto" and name == "chunksize":
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        allowed = "a positive int or 'auto'" if name == "chunksize" else "a positive int"
        raise ValueError(f"{name} must be {allowed}, not {chunksize!r}")
    return chunksize


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tb": 10**12, "tib": 2**40}


def parse_memory(limit: int | str | None) -> int | None:
    """Bytes from ``2_000_000_000``, ``"2GiB"``, ``"512 MB"`` or ``"1.5g"``."""
    if limit is None:
        return None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(limit))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"memory_limit must be a positive number of bytes or a size such "
                         f"as '2GiB' or '512MB', not {limit!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_threads(threads: int | None) -> int:
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, not {threads!r}")
    return threads


def parse_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or None, not {workers!r}")
    return workers


def _native_threads(native_threads: int | Literal["auto"] | None, workers: int) -> int | None:
    """The cap on native thread pools; ``"auto"``: cores // workers, unless the user set
    any of the variables that size them (``OMP_NUM_THREADS``...): theirs wins, as with
    loky and the standard library's pools."""
    if native_threads == "auto" and _user_sized_native_pools():
        return None
    if native_threads == "auto":
        return max(1, default_workers() // workers)
    if native_threads is not None and (not isinstance(native_threads, int)
                                       or native_threads < 1):
        raise ValueError(
            f"native_threads must be a positive int, 'auto' or None, not {native_threads!r}"
        )
    return native_threads


def _progress(progress: object) -> object:
    """None (no display) or a ``progress=`` that api/progress.py can show."""
    if progress is None or progress is False:
        return None
    from .progress import check

    return check(progress)


def _log_levels(relay: bool) -> dict[str | None, int] | None:
    """The caller's logger levels, for workers that relay their records (None where
    ``logging`` was never imported: its defaults hold, and it stays unimported)."""
    if not relay or "logging" not in sys.modules:
        return None
    from ..engines.log_relay import caller_levels

    return caller_levels()


def _authkey(engine: str) -> bytes | None:
    """This process's multiprocessing authkey, for the workers of engines that want it."""
    if not spec_of(engine).authkey:
        return None
    import multiprocessing.process

    return bytes(multiprocessing.process.current_process().authkey)


def _user_sized_native_pools() -> bool:
    from ..engines.process.warmup import NATIVE_THREAD_VARIABLES

    return any(os.environ.get(name) for name in NATIVE_THREAD_VARIABLES)
