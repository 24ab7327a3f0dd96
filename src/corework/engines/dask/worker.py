"""What runs in each Dask worker process: a chunk (``_run``), this pool's initializer
once per process, the task functions kept unpickled, and the stop requests of
:mod:`.halting`. The classes here are the wire format between the caller and a worker."""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..._errors import Cancelled
from ...transport.failure import Failure
from ...transport.main_namespace import run_initializer
from ...transport.picklers import dumps_by_reference
from ..contract import CallKind, ChunkReport, WorkerSetup
from ..runner import current as _runner_current
from ..runner import run_chunk
from ..unpicklable import fail_all, replace_unpicklable

#: Task functions a worker process keeps unpickled, per pool; older ones are unpickled again.
FUNCTIONS_PER_WORKER = 32


@dataclass(frozen=True)
class _Args:
    """A chunk's items pickled here: ``data``, and its out-of-band buffers as ``refs``,
    each ``(scattered data, offset, length, read-only)``; Dask puts the data in place
    of each future before the task runs."""

    data: bytes
    refs: tuple[tuple[Any, int, int, bool], ...] = ()


class _SetupFailed:
    """What a task returns when this pool's initializer raised in its worker."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure


class _Result:
    """A chunk's report as pickled in the worker: corework's pickling (memoryviews
    included), its buffers out of band so Dask sends them as frames, not copies."""

    def __init__(self, chunk_id: int, seconds: float, data: bytes,
                 buffers: list[pickle.PickleBuffer],
                 logs: list[tuple[int | None, dict[str, Any]]] | None = None) -> None:
        self.chunk_id = chunk_id
        self.seconds = seconds
        self.data = data
        self.buffers = buffers
        #: What the chunk logged: (task's place in it, or None; the record's fields).
        self.logs = logs or []

    @classmethod
    def of(cls, report: ChunkReport,
           logs: list[tuple[int | None, dict[str, Any]]] | None = None) -> _Result:
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = dumps_by_reference((report.results, report.failures, report.error), buffers)
        except Exception:
            replace_unpicklable(report)  # a result that can't be pickled fails its task only
            data = dumps_by_reference((report.results, report.failures, report.error), buffers)
        return cls(report.chunk_id, report.seconds, data, buffers, logs)

    def __reduce__(self) -> tuple[Any, ...]:
        raws = [buffer.raw() for buffer in self.buffers]
        return (_Result, (self.chunk_id, self.seconds, self.data, raws, self.logs))

    def report(self) -> ChunkReport:
        """Unpickled here, in the caller."""
        results, failures, error = pickle.loads(
            self.data, buffers=[bytearray(b) if isinstance(b, bytes) else b
                                for b in self.buffers])
        return ChunkReport(self.chunk_id, results, failures, self.seconds, error, True)


# ----------------------------------------------------------------------------- the worker
#
# Module state, in each Dask worker process (a cache, keyed by pool): which pools'
# initializers ran here and how, and the task functions already unpickled.

_worker_lock = threading.Lock()
_initialized: dict[str, Failure | None] = {}  # pool token -> the initializer's failure
_functions: OrderedDict[tuple[str, int], Callable[..., Any]] = OrderedDict()
#: Which tasks run in this process, and which were stopped (see ``_stop_keys``). Their
#: lock is never held for long: the worker's event loop takes it.
_keys_lock = threading.Lock()
_running_keys: set[str] = set()
_stopped_keys: OrderedDict[str, None] = OrderedDict()
#: Stopped task keys a worker process remembers; a stopped task reaches a worker, if at
#: all, within moments of being stopped, so only the latest matter.
STOPPED_KEYS_KEPT = 4096


def _run(key: str, pool: tuple[str, bytes | None], function: tuple[int, bytes],
         chunk: tuple[int, int, bytes, list[tuple[Any, int, int, bool]]]
         ) -> _Result | ChunkReport | _SetupFailed:
    """One chunk, in a Dask worker: set the pool up here if need be, then run it.

    ``key``: the Dask task's own; ``pool``: its token and setup; ``function``: its id
    and pickle; ``chunk``: its id, call kind, pickled items and their buffers (Dask has
    put scattered data in place)."""
    chunk_id = chunk[0]
    with _keys_lock:
        if key in _stopped_keys:  # stopped before it started here: it must not run
            return ChunkReport(chunk_id, [], {}, 0.0, Failure.capture(
                Cancelled("the task was stopped before it started")))
        _running_keys.add(key)
    try:
        return _run_chunk(pool, function, chunk)
    finally:
        with _keys_lock:
            _running_keys.discard(key)


def _run_chunk(pool: tuple[str, bytes | None], function: tuple[int, bytes],
               chunk: tuple[int, int, bytes, list[tuple[Any, int, int, bool]]]
               ) -> _Result | ChunkReport | _SetupFailed:
    token, setup = pool
    fn_id, fn_blob = function
    chunk_id, kind, data, refs = chunk
    with _captured_logs(token) as logs:
        failure = _initialize(token, setup)
        if failure is not None:
            return _SetupFailed(failure)
        try:
            fn = _function(token, fn_id, fn_blob)
        except BaseException as exc:  # e.g. a module the function needs is missing here
            return fail_all(chunk_id, exc, "function")
        try:
            items = pickle.loads(data, buffers=[_buffer(*ref) for ref in refs])
        except BaseException as exc:  # e.g. a class the worker cannot import
            return fail_all(chunk_id, exc, "arguments")
        report = run_chunk(chunk_id, fn, CallKind(kind), items)
    return _Result.of(report, logs)


def _initialize(token: str, setup: bytes | None) -> Failure | None:
    """Run the pool's initializer once in this process; its failure, if it raised."""
    if setup is None:
        return None
    with _worker_lock:  # a worker with several threads runs it once
        if token not in _initialized:
            _initialized[token] = None
            try:
                options: WorkerSetup = pickle.loads(setup)
                if options.relay_logs and options.log_levels is not None:
                    _relay_for(token, options.log_levels)
                if options.initializer is not None:
                    run_initializer(options.initializer, options.initargs)
            except Exception as exc:
                _initialized[token] = Failure.capture(exc)
        return _initialized[token]


# ------------------------------------------------------------------ the log relay here
#
# A Dask worker process is shared: its handlers, and other tasks' records, stay as they
# are. One RelayHandler on the root logger keeps what a corework chunk's thread logs
# while it runs, for the chunk's result (records of the pools that relay only); the
# caller hands them to its own handlers (see engines/_log_relay).

_relaying: set[str] = set()  # pool tokens whose records go back to the caller
_capture = threading.local()  # .logs: the running chunk's records, or None


def _relay_for(token: str, levels: dict[str | None, int]) -> None:
    """Relay this pool's records. ``levels``: the caller's logger levels, for the workers
    of a pool's own cluster (the root's only where it would let more through), so what
    the caller would handle is logged; empty on a cluster others share, whose levels
    stay its own."""
    import logging

    from ..log_relay import RelayHandler

    class ChunkRelay(RelayHandler):
        """Only a corework chunk's thread's records are kept (and made wire-ready)."""

        def emit(self, record: logging.LogRecord) -> None:
            if getattr(_capture, "logs", None) is not None:
                super().emit(record)

    root = logging.getLogger()
    if not any(isinstance(handler, RelayHandler) for handler in root.handlers):
        root.addHandler(ChunkRelay(_keep_record, _where))
    for name, level in levels.items():
        if name is None:
            continue
        logger = logging.getLogger(name or None)
        if name or level < logger.getEffectiveLevel():
            logger.setLevel(level)
    _relaying.add(token)


def _keep_record(meta: tuple[Any, ...]) -> None:
    logs = getattr(_capture, "logs", None)
    if logs is not None:
        logs.append((meta[3], meta[4]))


def _where() -> tuple[int, int, int] | None:
    chunk = getattr(_runner_current, "chunk", None)
    return None if chunk is None else (0, chunk[0], len(chunk[1]))


@contextlib.contextmanager
def _captured_logs(token: str) -> Iterator[list[tuple[int | None, dict[str, Any]]] | None]:
    """While a chunk of pool ``token`` runs in this thread: the list its records go to."""
    logs: list[tuple[int | None, dict[str, Any]]] = []
    _capture.logs = logs
    try:
        yield logs
    finally:
        _capture.logs = None
        if token not in _relaying:
            logs.clear()


def _function(token: str, fn_id: int, blob: bytes) -> Callable[..., Any]:
    key = (token, fn_id)
    with _worker_lock:
        known = _functions.get(key)
        if known is not None:
            _functions.move_to_end(key)
            return known
    fn: Callable[..., Any] = pickle.loads(blob)
    with _worker_lock:
        _functions[key] = fn
        while len(_functions) > FUNCTIONS_PER_WORKER:
            _functions.popitem(last=False)
    return fn


async def _stop_keys(keys: list[str], dask_worker: Any = None) -> tuple[bool, bool]:
    """Run by ``Client.run`` on the event loop of every worker (a coroutine, so that it
    runs even while the worker's task threads are busy): these tasks must not start here
    from now on. Returns whether one of them runs here now, and whether this worker has
    a nanny (that would replace it, were it ended)."""
    with _keys_lock:
        for key in keys:
            _stopped_keys[key] = None
            _stopped_keys.move_to_end(key)
        while len(_stopped_keys) > STOPPED_KEYS_KEPT:
            _stopped_keys.popitem(last=False)
        running = not _running_keys.isdisjoint(keys)
    return running, getattr(dask_worker, "nanny", None) is not None


async def _end_worker() -> None:
    """Run by ``Client.run`` on the event loop of a worker whose task must stop (a
    coroutine, so that it runs even while the worker's task thread is busy): its nanny
    replaces it."""
    os._exit(1)


def _buffer(data: Any, offset: int, nbytes: int, readonly: bool) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    view = view[offset:offset + nbytes]
    return view.toreadonly() if readonly else view
