"""A process worker's life: set up, then run chunks until told to stop.

The conversation on the worker's channel (see ``_channel``: each message a small tuple,
some with a packed object whose large buffers come as shared-memory segments)::

    caller                                   worker
    ("setup",) + WorkerSetup          ──▶
                                     ◀──     ("ready", pid) | ("init_failed",) + Failure
    ("function", fn_id, forget_ids)
               + function             ──▶    (no answer; kept for later chunks)
    ("run", chunk_id, fn_id, kind)
               + items                ──▶
                                     ◀──     ("done", chunk_id, seconds)
                                               + (results, failures, chunk_error|None)
    ("release", share_ids)            ──▶    (no answer; unmaps shares the caller let go)
    ("stop",)  or end-of-file         ──▶    exit 0

A function is sent once per worker; later chunks name it by id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any

from .. import _segments
from .._channel import Channel, Message
from .._errors import SerializationError
from .._transport import CallKind, Failure, pack_result
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
    _line_buffer_std_streams()
    channel = Channel.from_fd(fd)
    try:
        return _serve(channel)
    finally:
        channel.close()


def _serve(channel: Channel) -> int:
    try:
        setup: WorkerSetup = channel.recv().unpack()
    except EOFError:
        return 0
    _limit_native_threads(setup.native_threads)
    if setup.initializer is not None:
        try:
            setup.initializer(*setup.initargs)
        except BaseException as exc:
            channel.send(("init_failed",), pack_result(Failure.capture(exc)))
            return 3
    channel.send(("ready", os.getpid()))
    functions: dict[int, Any] = {}  # id -> the function, or why it could not be loaded
    kept: dict[str, Any] = {}  # shares mapped here, until the caller releases them
    while True:
        try:
            message = channel.recv()
        except EOFError:
            return 0
        tag = message.meta[0]
        if tag == "function":
            _load_function(message, functions)
        elif tag == "run":
            report = _run(message, functions, kept)
            flush_std_streams()  # a task's output leaves before its result
            _send_report(channel, report)
        elif tag == "release":
            for share_id in message.meta[1]:
                kept.pop(share_id, None)
        else:
            return 0


def _load_function(message: Message, functions: dict[int, Any]) -> None:
    _, fn_id, forget = message.meta
    for old in forget:
        functions.pop(old, None)
    try:
        functions[fn_id] = message.unpack()
    except BaseException as exc:  # e.g. a module the function needs is missing here
        functions[fn_id] = _CannotLoad(exc)


class _CannotLoad:
    """Stands in for a function that failed to load, so its chunks fail with the reason."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _run(message: Message, functions: dict[int, Any], kept: dict[str, Any]) -> ChunkReport:
    _, chunk_id, fn_id, kind = message.meta
    fn = functions[fn_id]
    if isinstance(fn, _CannotLoad):
        message.discard()
        return _fail_all(chunk_id, fn.exc)
    try:
        items = message.unpack()
    except BaseException as exc:
        return _fail_all(chunk_id, exc)
    for share_id, _, _ in message.layout.segments:  # keep shares mapped for later chunks
        if share_id is not None and share_id not in kept:
            found = _segments.lookup(share_id)
            if found is not None:
                kept[share_id] = found[1]
    return run_chunk(chunk_id, fn, CallKind(kind), items)


def _fail_all(chunk_id: int, exc: BaseException) -> ChunkReport:
    error = SerializationError(
        f"the worker could not load the task's function or arguments: "
        f"{type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return ChunkReport(chunk_id, [], error=Failure.capture(error))


def _send_report(channel: Channel, report: ChunkReport) -> None:
    """Send the 'done' message; a result that can't be pickled fails only its own task."""
    try:
        packed = pack_result((report.results, report.failures, report.error))
    except Exception:
        _replace_unpicklable(report)
        packed = pack_result((report.results, report.failures, report.error))
    try:
        channel.send(("done", report.chunk_id, report.seconds), packed)
    finally:
        packed.close()


def _replace_unpicklable(report: ChunkReport) -> None:
    for position, value in enumerate(report.results):
        try:
            pack_result(value).close()
        except Exception as exc:
            report.results[position] = None
            error = SerializationError(
                f"the task's result {type(value).__qualname__} cannot be pickled to send it "
                f"back: {exc}. Return plain data, or use engine='thread'."
            )
            report.failures[position] = Failure(error, "SerializationError", str(error), "")


def _limit_native_threads(limit: int | None) -> None:
    """Cap BLAS/OpenMP thread pools so workers × native threads fit the cores."""
    if limit is None:
        return
    for name in _NATIVE_THREAD_VARIABLES:  # for libraries loaded from now on
        os.environ[name] = str(limit)
    if any(name in sys.modules for name in _NATIVE_POOL_MODULES):  # already loaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limit)


def _line_buffer_std_streams() -> None:
    """Write each line a task prints at once, as on a terminal, even where stdout is a
    pipe (a Jupyter kernel's, which shows what arrives there in the running cell)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(OSError, ValueError):
                reconfigure(line_buffering=True)


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
