"""What runs in each Dask worker process: a chunk (``_run``), this pool's initializer
once per process, the task functions kept unpickled, and the stop requests of
:mod:`.halting`. The classes here are the wire format between the caller and a worker."""

from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..._errors import Cancelled
from ...transport.failure import Failure
from ...transport.main_namespace import run_initializer
from ...transport.picklers import dumps_by_reference
from .._base import CallKind, ChunkReport, WorkerSetup
from .._runner import run_chunk
from .._unpicklable import fail_all, replace_unpicklable

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
                 buffers: list[pickle.PickleBuffer]) -> None:
        self.chunk_id = chunk_id
        self.seconds = seconds
        self.data = data
        self.buffers = buffers

    @classmethod
    def of(cls, report: ChunkReport) -> _Result:
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = dumps_by_reference((report.results, report.failures, report.error), buffers)
        except Exception:
            replace_unpicklable(report)  # a result that can't be pickled fails its task only
            data = dumps_by_reference((report.results, report.failures, report.error), buffers)
        return cls(report.chunk_id, report.seconds, data, buffers)

    def __reduce__(self) -> tuple[Any, ...]:
        raws = [buffer.raw() for buffer in self.buffers]
        return (_Result, (self.chunk_id, self.seconds, self.data, raws))

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
    return _Result.of(run_chunk(chunk_id, fn, CallKind(kind), items))


def _initialize(token: str, setup: bytes | None) -> Failure | None:
    """Run the pool's initializer once in this process; its failure, if it raised."""
    if setup is None:
        return None
    with _worker_lock:  # a worker with several threads runs it once
        if token not in _initialized:
            _initialized[token] = None
            try:
                options: WorkerSetup = pickle.loads(setup)
                if options.initializer is not None:
                    run_initializer(options.initializer, options.initargs)
            except Exception as exc:
                _initialized[token] = Failure.capture(exc)
        return _initialized[token]


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
