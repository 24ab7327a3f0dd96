"""The one small interface between the scheduler and an engine.

An engine owns numbered *slots* (``slots`` of them; more may be announced later with
``worker_ready``); each slot runs one chunk at a time. Slots of one *group* share a worker
process (the process engine with ``threads=``): its death costs every chunk running in it.
The scheduler decides which chunk goes to which slot and when; the engine only runs chunks
and reports back through :class:`EngineEvents`::

    scheduler                          engine
    ---------                          ------
    start(events)      ───────────▶    start a worker per slot ── events.worker_ready(slot)
    prepare(fn)        ───────────▶    serialize the function once (FunctionRef)
    pack(items, ...)   ───────────▶    serialize a chunk's arguments (in the caller's thread)
    send(slot, chunk)  ───────────▶    run it ─────────────────── events.chunk_done(slot, report)
    kill(slot)         ───────────▶    stop that worker now ────── events.worker_lost(slot, error)
                                       (a replacement follows) ─── events.worker_ready(slot)
    restart(slot)      ───────────▶    replace an idle worker ──── events.worker_ready(slot)
    stop(wait)         ───────────▶    end every worker

Engines know nothing of ordering, retries, deadlines or futures: those are the scheduler's.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._errors import InitializerFailed
from ..transport.failure import Failure


class CallKind(enum.IntEnum):
    """How a chunk's items become calls of the task function (part of a chunk's work: the
    scheduler chooses it, every engine's workers call by it)."""

    ARG = 0  # fn(item)             -- map, imap
    STAR = 1  # fn(*item)           -- starmap, Executor.map over several iterables
    CALL = 2  # fn(*args, **kwargs) -- submit; item is (args, kwargs)


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a pool needs before its first task."""

    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    native_threads: int | None = None  # cap for BLAS/OpenMP pools; None leaves them alone
    threads: int = 1  # task threads in each worker process (the process engine)
    elastic: bool = False  # the pool may give workers more threads (engine="auto")
    #: multiprocessing's authentication key of the caller, so that Manager proxies
    #: passed to tasks connect from workers however they were started.
    authkey: bytes | None = field(default=None, repr=False)
    #: Names for the slot threads of the thread-hosted engines (interpreter): slot N's
    #: thread is ``{thread_names}_{N}`` (as the standard library names its threads);
    #: None keeps the engine's own names.
    thread_names: str | None = None
    #: Send what tasks log to the caller's handlers (process workers: see log_relay).
    relay_logs: bool = True
    #: The caller's logger levels when the pool started (None: logging's defaults).
    log_levels: dict[str | None, int] | None = None


@dataclass(eq=False)
class FunctionRef:
    """A task function prepared once by an engine; ``id`` names it on the wire."""

    id: int
    fn: Callable[..., Any]
    blob: Any = None  # serialized form, for engines that cross process boundaries


@dataclass(eq=False)
class ChunkWork:
    """A chunk as an engine sees it: which function, how to call it, on what."""

    id: int
    fn: FunctionRef
    kind: CallKind
    items: Sequence[Any]
    payload: Any = None  # what ``Engine.pack`` made of ``items``
    first: int = 0  # the submission's index of its first task (a log record names its task)


@dataclass
class ChunkReport:
    """A finished chunk: one result per item (None where it failed) and the failures."""

    chunk_id: int
    results: list[Any]
    #: Engines report a Failure; the scheduler may merge in final exceptions (see Assembly).
    failures: dict[int, Failure | BaseException] = field(default_factory=dict)
    seconds: float = 0.0  # time spent running the chunk's calls, for adaptive chunking
    error: Failure | None = None  # set when no item could run (every task fails with it)
    remote: bool = False  # True when failures come from another process
    #: Tasks that ran more than once (retried, or re-run alone): position -> times run.
    attempts: dict[int, int] = field(default_factory=dict)


class Prober(Protocol):
    """Watches how the first chunk's tasks use the GIL (``engine="auto"``, see api/auto.py)."""

    seconds: float

    def probed(self, figures: dict[str, float]) -> int | None:
        """The probe's figures; returns the task threads each worker should have."""


class EngineEvents(Protocol):
    """What an engine tells the scheduler. Called from any thread; must not block long."""

    def worker_ready(self, slot: int) -> None: ...

    def chunk_done(self, slot: int, report: ChunkReport) -> None: ...

    def worker_lost(self, slot: int, error: BaseException) -> None: ...

    def engine_broken(self, error: BaseException) -> None: ...


class Engine(abc.ABC):
    """Runs chunks on ``workers`` slots. Subclasses are small; see the module docstring."""

    def __init__(self, workers: int, setup: WorkerSetup) -> None:
        self.workers = workers
        self.setup = setup
        #: Worker process id -> exit code, for the processes reaped at stop (if any).
        self.exit_codes: dict[int, int | None] = {}

    def worker_pids(self) -> list[int]:
        """Ids of the live worker processes (none for engines without their own)."""
        return []

    @property
    def slots(self) -> int:
        """How many chunks can run at once (may grow while the engine runs)."""
        return self.workers

    def group(self, slot: int) -> int:
        """Which worker process a slot belongs to: slots of one group die together."""
        return slot

    @abc.abstractmethod
    def start(self, events: EngineEvents) -> None:
        """Start every slot's worker; each reports ``worker_ready`` when it can take work."""

    def prepare(self, fn: Callable[..., Any], fn_id: int) -> FunctionRef:
        """Make ``fn`` ready to send (serialize it once, where the engine needs to)."""
        return FunctionRef(fn_id, fn)

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        """Serialize a chunk's items, raising SerializationError naming the bad one."""
        return None

    def sending_pass(self) -> contextlib.AbstractContextManager[None]:
        """Around packing several chunks whose items all existed before it began, with
        none of the caller's code run in between: an engine may then send a buffer it
        copied once again without checking it is unchanged (see ``transport/reuse.sending_pass``).
        """
        return contextlib.nullcontext()

    @abc.abstractmethod
    def send(self, slot: int, work: ChunkWork) -> None:
        """Run ``work`` on the idle worker of ``slot``; report with ``chunk_done``."""

    @abc.abstractmethod
    def kill(self, slot: int) -> None:
        """Stop what ``slot`` runs now; report ``worker_lost``, then replace the worker."""

    @abc.abstractmethod
    def restart(self, slot: int) -> None:
        """Replace the slot's idle worker with a fresh one (``worker_ready`` follows)."""

    @abc.abstractmethod
    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        """End every worker; with ``wait``, return only when they are gone.

        Workers finish their current chunk first, unless ``now``: then it is abandoned
        (processes are killed — sent SIGTERM instead if ``gently`` — threads are
        interrupted and not waited for).
        """

    def detach(self) -> None:
        """The scheduler is done with this stopped engine: the engine lets go of it (so
        neither keeps the other, and a pool's data, alive), and drops any late event."""
        self._events: EngineEvents = _DETACHED


class _Detached:
    """The events of an engine whose scheduler has let go of it: nobody listens."""

    def worker_ready(self, slot: int) -> None:
        pass

    def chunk_done(self, slot: int, report: ChunkReport) -> None:
        pass

    def worker_lost(self, slot: int, error: BaseException) -> None:
        pass

    def engine_broken(self, error: BaseException) -> None:
        pass


_DETACHED = _Detached()


def initializer_failed(setup: WorkerSetup, where: str, failure: Failure) -> InitializerFailed:
    """The one error of every engine whose worker's initializer raised (``where``: "in a
    worker process", "in thread 3"...)."""
    error = InitializerFailed(
        f"the initializer {setup.initializer!r} raised {where}: {failure.type_name}: "
        f"{failure.message}. No task can run in this pool.")
    if failure.exc is not None:
        error.__cause__ = failure.exc
    return error


def default_workers() -> int:
    """The cores this process may use (affinity- and cgroup-aware where Python knows)."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
