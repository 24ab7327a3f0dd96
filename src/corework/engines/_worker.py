"""A process worker's life: set up, then run chunks on its task threads until told to stop.

A plain worker has one thread: its main thread reads a chunk, runs it, sends the report
and reads the next, so tasks run on a main thread as under ``multiprocessing`` (signal
handlers work) and a round trip costs no thread switch. A worker with ``threads`` task
threads, or one that may get more (``elastic``: ``engine="auto"``), runs task thread 0 on
its main thread and the others beside it, and a *reader* thread takes the caller's
messages and hands the chunks out, so the worker hears of new threads or a probe while
its tasks run.

The conversation on the worker's channel (see ``_channel``: each message a small tuple,
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
``engine="auto"``) watches how a chunk's tasks use the GIL: see :func:`_probe`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import queue
import signal
import statistics
import sys
import threading
import time
from typing import Any

from .. import _segments
from .._channel import Channel, Message
from .._errors import SerializationError
from .._transport import CallKind, Failure, pack_result, run_initializer
from ._base import ChunkReport, WorkerSetup
from ._runner import run_chunk

_NATIVE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)
_NATIVE_POOL_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr")
#: The exit code of a worker whose own machinery failed (never a task's doing).
BROKEN_EXIT = 70

#: While probing, the GIL is handed over only this often: a task that holds it delays
#: the probe's wake-ups by about this much, far more than a busy machine ever does.
PROBE_SWITCH_SECONDS = 0.01
#: The probe's sleeps between wake-ups.
PROBE_SLEEP = 0.001
#: Enough wake-ups to call the GIL free (each on time) or held (each late).
PROBE_FREE_SAMPLES = 10
PROBE_HELD_SAMPLES = 2


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
    if setup.authkey is not None:
        import multiprocessing.process

        multiprocessing.process.current_process().authkey = setup.authkey
    if setup.initializer is not None:
        try:
            run_initializer(setup.initializer, setup.initargs)
        except BaseException as exc:
            failure = pack_result(Failure.capture(exc))
            # what the initializer logged to a multiprocessing queue (a QueueHandler) is
            # in it before the caller hears that the pool is broken, as when a standard
            # library worker has exited
            finish_process()
            channel.send(("init_failed",), failure)
            return 3
    channel.send(("ready", os.getpid()))
    return _Worker(channel).serve(setup.threads, setup.elastic)


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
                _load_function(message, self.functions)
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
            figures = _probe(probe, job[-1], self.native_ids.get(thread))
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
        inbox = self.inboxes[index]
        while (job := inbox.get()) is not None:
            self._do(index, job)

    def _do(self, index: int, job: tuple[Any, ...]) -> None:
        """Run a chunk on task thread ``index`` (this thread) and send its report."""
        message, chunk_id, fn, kind, finished = job
        report = self._run(message, chunk_id, fn, kind)
        if finished is not None:
            finished.set()
        flush_std_streams()  # a task's output leaves before its result
        self._send_report(index, report)

    def _run(self, message: Message, chunk_id: int, fn: Any, kind: int) -> ChunkReport:
        if isinstance(fn, _CannotLoad):
            message.discard()
            return _fail_all(chunk_id, fn.exc, "function")
        try:
            items = message.unpack()
        except BaseException as exc:
            return _fail_all(chunk_id, exc, "arguments")
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
            _replace_unpicklable(report)
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


def _probe(seconds: float, finished: threading.Event, task: int | None
           ) -> dict[str, float]:
    """Watch the GIL while a chunk runs on thread ``task`` (its kernel id), for up to
    ``seconds``.

    This thread sleeps 1 ms again and again and notes how late it wakes up. Waking up
    means taking the GIL back: if the task runs Python code, it holds the GIL and hands
    it over only every switch interval (raised to PROBE_SWITCH_SECONDS meanwhile), so
    each wake-up is about that late; if the task waits or runs native code that released
    the GIL, wake-ups are on time, whatever else the machine is doing. How much of the
    time the task's thread wanted a core (ran, or waited for one: the kernel's schedstat)
    tells waiting from native code, on a busy machine too.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(PROBE_SWITCH_SECONDS)
    started, cpu, wanted = time.perf_counter(), time.process_time(), _wanted(task)
    delays: list[float] = []
    try:
        while (not finished.is_set() and time.perf_counter() - started < seconds
               and not _decided(delays)):
            asleep = time.perf_counter()
            time.sleep(PROBE_SLEEP)
            delays.append(time.perf_counter() - asleep - PROBE_SLEEP)
    finally:
        sys.setswitchinterval(interval)
    wall = time.perf_counter() - started
    cpu_share = (time.process_time() - cpu) / wall if wall else 1.0
    now = _wanted(task)
    busy = (now - wanted) / wall if now is not None and wanted is not None and wall else None
    return {"samples": float(len(delays)),
            "delay": statistics.median(delays) if delays else 0.0,
            "switch": PROBE_SWITCH_SECONDS, "cpu_share": cpu_share,
            "busy": min(1.0, cpu_share if busy is None else busy),
            "wall": wall, "ended": float(finished.is_set())}


def _wanted(thread: int | None) -> float | None:
    """Seconds thread ``thread`` has run or waited to run (Linux schedstat), or None."""
    if thread is None:
        return None
    try:
        with open(f"/proc/self/task/{thread}/schedstat") as stat:
            ran, waited = stat.read().split()[:2]
    except (OSError, ValueError):
        return None
    return (int(ran) + int(waited)) / 1e9


def _decided(delays: list[float]) -> bool:
    """Whether the wake-ups so far already tell held from free beyond doubt."""
    if len(delays) >= PROBE_HELD_SAMPLES and min(delays) >= PROBE_SWITCH_SECONDS / 2:
        return True
    return (len(delays) >= PROBE_FREE_SAMPLES
            and statistics.median(delays) < PROBE_SWITCH_SECONDS / 8)


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


def _fail_all(chunk_id: int, exc: BaseException, what: str) -> ChunkReport:
    error = SerializationError(
        f"the worker could not unpickle the task's {what}: {type(exc).__name__}: {exc}"
        f"{_unpickling_hint(exc)}",
        stage="unpickle-function" if what == "function" else "unpickle-argument",
        original=_portable(exc))
    error.__cause__ = exc
    return ChunkReport(chunk_id, [], error=Failure.capture(error))


def _portable(exc: BaseException) -> BaseException | None:
    """``exc`` if it survives pickling, to travel inside the error that names the stage
    (its traceback text travels anyway)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except BaseException:
        return None
    exc.__traceback__ = None
    return exc


def _unpickling_hint(exc: BaseException) -> str:
    if isinstance(exc, (ImportError, AttributeError)):
        return (". Make sure the worker can import what it refers to (a module on "
                "sys.path, a class at module level)")
    return ""


def _replace_unpicklable(report: ChunkReport) -> None:
    for position, value in enumerate(report.results):
        try:
            pack_result(value).close()
        except BaseException as exc:
            report.results[position] = None
            error = SerializationError(
                f"the task's result {type(value).__qualname__} could not be pickled in the "
                f"worker to send it back: {type(exc).__name__}: {exc}. Return plain data, "
                "or use engine='thread'.", stage="pickle-result", original=_portable(exc))
            error.__cause__ = exc
            report.failures[position] = Failure.capture(error)
    for position, failure in list(report.failures.items()):
        try:
            pack_result(failure).close()
        except BaseException as exc:  # an exception whose text or type cannot travel
            report.failures[position] = Failure(
                None, getattr(failure, "type_name", "Exception"),
                f"(its exception could not be sent back: {type(exc).__name__}: {exc})", "")


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
    sys.path[:] = json.loads(os.environ.pop("COREWORK_SYS_PATH", "[]")) or sys.path
    code = serve_fd(int(sys.argv[1]))
    finish_process()
    sys.exit(code)
