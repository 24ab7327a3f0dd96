"""A process worker's life: set up, then run chunks on its task threads until told to stop.

A plain worker has one thread: its main thread reads a chunk, runs it, sends the report
and reads the next, so tasks run on a main thread as under ``multiprocessing`` (signal
handlers work) and a round trip costs no thread switch. A worker with ``threads`` task
threads, or one that may get more (``elastic``: ``engine="auto"``), runs task thread 0 on
its main thread and the others beside it, and a *reader* thread takes the caller's
messages and hands the chunks out, so the worker hears of new threads or a probe while
its tasks run.

The conversation on the worker's channel (see ``transport/channel``: each message a small tuple,
some with a packed object whose large buffers come as shared-memory segments)::

    caller                                   worker
    ("setup",) + WorkerSetup          ──▶
                                     ◀──     ("ready", pid) | ("init_failed",) + Failure
    ("function", fn_id, forget_ids)
               + function             ──▶    (kept for later chunks)
                                     ◀──     ("loaded", fn_id)  (a chunk sent before this
                                               ends with the worker: it never started)
    ("run", chunk_id, fn_id, kind, thread, probe)
               + items                ──▶
                                     ◀──     ("probed", figures)    (when probe > 0)
                                     ◀──     ("done", thread, chunk_id, seconds)
                                               + (results, failures, chunk_error|None)
    ("threads", count)                ──▶    (no answer; starts task threads up to count)
    ("release", share_ids)            ──▶    (no answer; unmaps shares the caller let go)
    ("stop",)  or end-of-file         ──▶    running chunks finish; exit 0

A function is sent once per worker; later chunks name it by id. The *probe* (asked for by
``engine="auto"``) watches how a chunk's tasks use the GIL: see ``probe``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
from typing import Any

from ...transport import segments as _segments
from ...transport.channel import Channel, Message
from ...transport.failure import Failure
from ...transport.main_namespace import run_initializer
from ...transport.packing import pack_result
from ..contract import CallKind, ChunkReport, WorkerSetup
from ..runner import current, run_chunk
from ..unpicklable import CannotLoad, fail_all, load_function, replace_unpicklable
from .probe import probe_gil
from .warmup import NATIVE_THREAD_VARIABLES, Warmer

_NATIVE_POOL_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr")
#: The exit code of a worker whose own machinery failed (never a task's doing).
BROKEN_EXIT = 70


def serve_fd(fd: int) -> int:
    """Serve the caller on socket ``fd``; returns the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    os.set_inheritable(fd, False)  # programs that tasks start must not hold the channel
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
    if setup.authkey is not None:
        import multiprocessing.process

        multiprocessing.process.current_process().authkey = setup.authkey
    worker = _Worker(channel)
    if setup.relay_logs:  # before the initializer: what it logs is relayed, and the
        from ..log_relay import install  # logging it sets up is kept

        install(worker.send_log, worker.where, setup.log_levels)
    if setup.initializer is not None:
        try:
            run_initializer(setup.initializer, setup.initargs)
        except BaseException as exc:
            failure = pack_result(Failure.capture(exc))
            # what the initializer logged to a multiprocessing queue (a QueueHandler) is
            # in it before the caller hears that the pool is broken, as when a standard
            # library worker has exited
            flush_queues()
            channel.send(("init_failed",), failure)
            return 3
    channel.send(("ready", os.getpid()))
    return worker.serve(setup.threads, setup.elastic)


class _Worker:
    """The worker's threads: the reader, and the task threads it feeds."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.send_lock = threading.Lock()
        self.functions: dict[int, Any] = {}  # id -> the function, or why it did not load
        self.kept: dict[str, Any] = {}  # shares mapped here, until the caller releases them
        self.kept_lock = threading.Lock()
        self.inboxes: list[queue.SimpleQueue[tuple[Any, ...] | None]] = []
        self.native_ids: dict[int, int] = {}  # task thread -> its id in the kernel
        self.extra: list[threading.Thread] = []  # task threads besides the main thread

    def serve(self, threads: int, elastic: bool) -> int:
        """Run task thread 0 here, in the main thread; the others and the reader aside
        (a plain worker: read and run here, one chunk after the other)."""
        if threads == 1 and not elastic:
            self._read(inline=True)
            return 0
        self.inboxes.append(queue.SimpleQueue())
        self.native_ids[0] = threading.get_native_id()
        self._add_threads(threads)
        reader = threading.Thread(target=self._guarded, args=(self._read, False),
                                  name="corework-worker-reader", daemon=True)
        reader.start()
        self._run_tasks(0)
        for thread in self.extra:
            thread.join()
        reader.join()
        return 0

    # ------------------------------------------------------------------ the reader

    def _read(self, inline: bool) -> None:
        while True:
            try:
                message = self.channel.recv()
            except (EOFError, OSError):
                break
            tag = message.meta[0]
            if tag == "run" and inline:
                self._do(0, self._job(message))
            elif tag == "run":
                self._dispatch(message)
            elif tag == "function":
                load_function(message, self.functions)
                self._send(("loaded", message.meta[1]))
            elif tag == "threads":
                self._add_threads(message.meta[1])
            elif tag == "release":
                with self.kept_lock:
                    for share_id in message.meta[1]:
                        self.kept.pop(share_id, None)
            else:
                break
        for inbox in self.inboxes:  # each task thread ends after its current chunk
            inbox.put(None)

    def _job(self, message: Message) -> tuple[Any, ...]:
        """(message, chunk id, function, call kind, set-when-done event or None)."""
        _, chunk_id, fn_id, kind, _, probe = message.meta
        finished = threading.Event() if probe else None
        return message, chunk_id, self.functions[fn_id], kind, finished

    def _dispatch(self, message: Message) -> None:
        thread, probe = message.meta[4:]
        job = self._job(message)
        self.inboxes[thread].put(job)
        if probe:
            figures = probe_gil(probe, job[-1], self.native_ids.get(thread))
            self._send(("probed", figures))

    def _add_threads(self, count: int) -> None:
        while len(self.inboxes) < count:
            index = len(self.inboxes)
            self.inboxes.append(queue.SimpleQueue())
            thread = threading.Thread(target=self._guarded, args=(self._run_tasks, index),
                                      name=f"corework-task-{index}", daemon=True)
            self.extra.append(thread)
            thread.start()

    # ------------------------------------------------------------------ task threads

    def _run_tasks(self, index: int) -> None:
        self.native_ids[index] = threading.get_native_id()
        current.thread = index
        inbox = self.inboxes[index]
        while (job := inbox.get()) is not None:
            self._do(index, job)

    def where(self) -> tuple[int, int, int] | None:
        """(task thread, chunk id, task's position in it) of the calling thread's running
        task; None outside a task (for the log relay)."""
        chunk = getattr(current, "chunk", None)
        if chunk is None:
            return None
        return getattr(current, "thread", 0), chunk[0], len(chunk[1])

    def send_log(self, meta: tuple[Any, ...]) -> None:
        """Send a log record now (the log relay's handler; see ``log_relay``)."""
        self._send(meta)

    def _do(self, index: int, job: tuple[Any, ...]) -> None:
        """Run a chunk on task thread ``index`` (this thread) and send its report."""
        message, chunk_id, fn, kind, finished = job
        report = self._run(message, chunk_id, fn, kind)
        if finished is not None:
            finished.set()
        flush_std_streams()  # a task's output leaves before its result
        self._send_report(index, report)

    def _run(self, message: Message, chunk_id: int, fn: Any, kind: int) -> ChunkReport:
        if isinstance(fn, CannotLoad):
            message.discard()
            return fail_all(chunk_id, fn.exc, "function")
        try:
            items = message.unpack()
        except BaseException as exc:
            return fail_all(chunk_id, exc, "arguments")
        with self.kept_lock:  # keep shares mapped for later chunks
            for share_id, _, _ in message.layout.segments:
                if share_id is not None and share_id not in self.kept:
                    found = _segments.lookup(share_id)
                    if found is not None:
                        self.kept[share_id] = found[1]
        return run_chunk(chunk_id, fn, CallKind(kind), items)

    def _send_report(self, thread: int, report: ChunkReport) -> None:
        """Send the 'done' message; a result that can't be pickled fails its own task."""
        try:
            packed = pack_result((report.results, report.failures, report.error))
        except BaseException:
            replace_unpicklable(report)
            packed = pack_result((report.results, report.failures, report.error))
        try:
            self._send(("done", thread, report.chunk_id, report.seconds), packed)
        finally:
            packed.close()

    def _send(self, meta: tuple[Any, ...], packed: Any = None) -> None:
        with self.send_lock:
            self.channel.send(meta, packed)

    @staticmethod
    def _guarded(target: Any, *args: Any) -> None:
        """A thread of the worker's own: if it fails (the caller gone, a bug), the worker
        ends, so the caller sees a dead worker rather than waiting on a silent one."""
        try:
            target(*args)
        except OSError:
            os._exit(0)  # the caller has gone away
        except BaseException:
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
            flush_std_streams()
            os._exit(BROKEN_EXIT)


def _limit_native_threads(limit: int | None) -> None:
    """Cap BLAS/OpenMP thread pools so workers × native threads fit the cores; with no
    cap, give the pools the launcher's warm-up loaded at one thread their own sizes."""
    if limit is None:
        if Warmer.held_native_pools:
            _restore_native_threads()
        return
    for name in NATIVE_THREAD_VARIABLES:  # for libraries loaded from now on
        os.environ[name] = str(limit)
    if any(name in sys.modules for name in _NATIVE_POOL_MODULES):  # already loaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limit)


def _restore_native_threads() -> None:
    """The sizes the pools would have had, loaded here: the caller's variables, else
    one thread per core."""
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS")
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS") or omp
    with contextlib.suppress(ValueError):
        threadpool_limits(limits={"openmp": int(omp or cores), "blas": int(blas or cores)})


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


def flush_queues() -> None:
    """Let this process's multiprocessing queues hand over what was put in them (their
    close and join finalizers, in their order), and nothing else of a process's exit:
    the other finalizers (a semaphore's unlink among them) are not this moment's."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    wanted = ("_finalize_close", "_finalize_join")
    with contextlib.suppress(BaseException):
        pending = [(key, finalizer) for key, finalizer in list(util._finalizer_registry.items())
                   if getattr(finalizer._callback, "__name__", "") in wanted]
        for _, finalizer in sorted(pending, key=lambda entry: entry[0], reverse=True):
            finalizer()


def finish_process() -> None:
    """What a worker does on its way out, as a ``multiprocessing`` child does: its
    queues flush what tasks (or an initializer) put in them, then the std streams."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        with contextlib.suppress(BaseException):
            util._exit_function()
    flush_std_streams()


def main() -> None:
    """Entry point of a spawned (exec'd) worker: ``python -c ... FD``."""
    import json  # here: forked workers never need it

    sys.path[:] = json.loads(os.environ.pop("COREWORK_SYS_PATH", "[]")) or sys.path
    code = serve_fd(int(sys.argv[1]))
    finish_process()
    sys.exit(code)
