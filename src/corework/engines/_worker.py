"""A process worker's life: set up, then run chunks until told to stop.

The conversation on the worker's socket (each message one pickled tuple)::

    caller                                   worker
    ("setup", WorkerSetup blob)      ──▶
                                     ◀──     ("ready", pid) | ("init_failed", Failure)
    ("run", chunk_id, fn_id, fn_blob|None,
            forget_ids, kind, items_blob) ──▶
                                     ◀──     ("done", chunk_id, results, failures,
                                                      seconds, chunk_error|None)
    ("stop",)  or end-of-file        ──▶     exit 0

A function's blob is sent once per worker; later chunks name it by id.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from .._errors import SerializationError
from .._transport import CallKind, Failure, dumps_result, loads
from ._base import ChunkReport, WorkerSetup
from ._runner import run_chunk

_NATIVE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)
_NATIVE_POOL_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr")


def serve_fd(fd: int) -> int:
    """Serve the caller on socket ``fd``; returns the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    conn = Connection(fd)
    try:
        return _serve(conn)
    finally:
        conn.close()


def _serve(conn: Connection) -> int:
    try:
        _, setup_blob = loads(conn.recv_bytes())
    except EOFError:
        return 0
    setup: WorkerSetup = loads(setup_blob)
    _limit_native_threads(setup.native_threads)
    if setup.initializer is not None:
        try:
            setup.initializer(*setup.initargs)
        except BaseException as exc:
            conn.send_bytes(dumps_result(("init_failed", Failure.capture(exc))))
            return 3
    conn.send_bytes(dumps_result(("ready", os.getpid())))
    functions: dict[int, Any] = {}
    while True:
        try:
            message = loads(conn.recv_bytes())
        except EOFError:
            return 0
        if message[0] != "run":
            return 0
        conn.send_bytes(_encode(_run(message, functions)))


def _run(message: tuple[Any, ...], functions: dict[int, Any]) -> ChunkReport:
    _, chunk_id, fn_id, fn_blob, forget, kind, items_blob = message
    for old in forget:
        functions.pop(old, None)
    try:
        if fn_blob is not None:
            functions[fn_id] = loads(fn_blob)
        items = loads(items_blob)
    except BaseException as exc:  # e.g. a module the function needs is missing here
        return _fail_all(chunk_id, exc)
    return run_chunk(chunk_id, functions[fn_id], CallKind(kind), items)


def _fail_all(chunk_id: int, exc: BaseException) -> ChunkReport:
    error = SerializationError(
        f"the worker could not load the task's function or arguments: "
        f"{type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return ChunkReport(chunk_id, [], error=Failure.capture(error))


def _encode(report: ChunkReport) -> bytes:
    """The 'done' message; a result that can't be pickled fails only its own task."""
    message = ("done", report.chunk_id, report.results, report.failures, report.seconds,
               report.error)
    try:
        return dumps_result(message)
    except Exception:
        pass
    for position, value in enumerate(report.results):
        try:
            dumps_result(value)
        except Exception as exc:
            report.results[position] = None
            error = SerializationError(
                f"the task's result {type(value).__qualname__} cannot be pickled to send it "
                f"back: {exc}. Return plain data, or use engine='thread'."
            )
            report.failures[position] = Failure(error, "SerializationError", str(error), "")
    return dumps_result(("done", report.chunk_id, report.results, report.failures,
                         report.seconds, report.error))


def _limit_native_threads(limit: int | None) -> None:
    """Cap BLAS/OpenMP thread pools so workers × native threads fit the cores."""
    if limit is None:
        return
    for name in _NATIVE_THREAD_VARIABLES:  # for libraries loaded from now on
        os.environ[name] = str(limit)
    if any(name in sys.modules for name in _NATIVE_POOL_MODULES):  # already loaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limit)


def flush_std_streams() -> None:
    """Flush Python's stdout/stderr buffers (before fork or ``os._exit``)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def main() -> None:
    """Entry point of a spawned (exec'd) worker: ``python -c ... FD``."""
    sys.path[:] = json.loads(os.environ.pop("COREWORK_SYS_PATH", "[]")) or sys.path
    code = serve_fd(int(sys.argv[1]))
    flush_std_streams()
    sys.exit(code)
