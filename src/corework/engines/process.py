"""The process engine: one worker process per slot, forked by the launcher.

::

    scheduler ── send(slot, chunk) ──▶ worker socket ──▶ worker process (slot N)
        ▲                                                     │
        └── chunk_done / worker_lost ◀── reader thread ◀──────┘  (one thread per pool,
                                                                  waiting on every socket)

Workers are started by the process's single-threaded launcher (see ``_launcher``), so
a new or replacement worker costs a fork, not an interpreter start (``start_method=
"spawn"`` asks the launcher for fresh interpreters instead). A worker that dies is
reported as lost with its exit code or signal, and replaced.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any, ClassVar

import psutil

from .. import _segments
from .._channel import Channel, Message
from .._errors import InitializerFailed, MemoryLimitExceeded, SerializationError, WorkerCrashed
from .._transport import Failure, Packed, pack_for_workers, pack_items
from ._base import ChunkReport, ChunkWork, Engine, EngineEvents, FunctionRef, WorkerSetup
from ._launcher import LauncherClient, LauncherDied, get_launcher
from ._platform import describe_exit

START_METHODS = ("fork", "spawn")
#: How many task functions a worker keeps; older ones are forgotten and resent if needed.
FUNCTIONS_PER_WORKER = 32
#: Setups up to this size are queued in a worker's socket before the worker exists (they
#: fit its buffer); larger ones are sent once it runs.
SETUP_SENT_EARLY = 32 * 1024
#: Workers of one slot that may die in a row before being ready, before the pool is
#: declared broken: enough that one killed from outside while starting is no reason to
#: give up, few enough that a worker that cannot start is not respawned forever.
FAILED_STARTS_LIMIT = 10
#: How often workers' memory is measured when a pool has a memory_limit.
MEMORY_CHECK_INTERVAL = 0.1
#: How long to wait for the launcher's report of a dead worker's exit code.
EXIT_REPORT_TIMEOUT = 5.0


class _Worker:
    """The caller's view of one worker process."""

    def __init__(self, slot: int, pid: int, conn: Channel) -> None:
        self.slot = slot
        self.pid = pid
        self.conn = conn
        self.ready = False
        self.chunk_id: int | None = None  # the chunk it was last sent
        self.retiring = False  # told to exit by restart(): its end is no loss
        self.over_limit: int | None = None  # the RSS that got it killed
        self.unsent = False  # the last chunk could not be written: it died before
        self.reported = False  # its loss is being reported: a chunk sent now is an orphan
        self.send_lock = threading.Lock()
        self.functions: OrderedDict[int, None] = OrderedDict()  # ids this worker holds


class ProcessEngine(Engine):
    """Slots are worker processes; see the module docstring for the picture."""

    name: ClassVar[str] = "process"
    crosses_processes: ClassVar[bool] = True

    def __init__(self, workers: int, setup: WorkerSetup, start_method: str = "fork",
                 memory_limit: int | None = None) -> None:
        super().__init__(workers, setup)
        self.memory_limit = memory_limit
        self._next_memory_check = 0.0
        if start_method not in START_METHODS:
            raise ValueError(
                f"start_method must be one of {START_METHODS}, not {start_method!r}"
            )
        self.start_method = start_method
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._retiring: dict[Channel, _Worker] = {}  # recycled, exiting on their own
        self._failed_starts: dict[int, int] = {}  # slot -> workers in a row that died unready
        self._exited: list[int] = []  # pids of workers gone, for stop(wait=True)
        self.exit_codes: dict[int, int | None] = {}  # pid -> exit code, once stopped
        self._stopping = False
        self._setup = pack_for_workers(
            setup, f"the initializer {setup.initializer!r} or its initargs")
        self._shares_sent: set[str] = set()  # shares some worker may hold mapped
        self._released: deque[str] = deque()  # shares the caller let go of, to tell workers

    # ------------------------------------------------------------------ lifecycle

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._launcher: LauncherClient = get_launcher()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)  # woken from garbage-collector callbacks too
        self._shares_sent.update(self._setup.share_ids)
        _segments.on_release(self._share_released)
        self._reader = threading.Thread(
            target=self._read_loop, name="corework-process-reader", daemon=True
        )
        try:
            self._start_workers(list(range(self.workers)))
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._reader.start()  # while the new workers get going

    def _start_workers(self, slots: list[int]) -> None:
        """Start a worker for each slot; its setup waits in its socket before it exists."""
        pairs = [socket.socketpair() for _ in slots]
        early = len(self._setup.data) <= SETUP_SENT_EARLY  # fits the socket buffer
        conns = [Channel(ours) for ours, _ in pairs]
        if early:
            for conn in conns:
                conn.send(("setup",), self._setup)
        theirs = [pair[1] for pair in pairs]
        try:
            try:
                pids = self._launcher.start_workers(theirs, self.start_method)
            except LauncherDied:
                self._launcher = get_launcher()  # restarted; one retry
                pids = self._launcher.start_workers(theirs, self.start_method)
        except BaseException:
            for conn in conns:
                conn.close()
            raise
        finally:
            for sock in theirs:
                sock.close()
        if not early:
            for conn in conns:
                conn.send(("setup",), self._setup)
        with self._lock:
            for slot, pid, conn in zip(slots, pids, conns, strict=True):
                self._workers[slot] = _Worker(slot, pid, conn)
                if self._stopping:  # stop() ran meanwhile and could not tell this one
                    conn.send(("stop",))
        self._wake()

    def stop(self, wait: bool, now: bool = False) -> None:
        with self._lock:
            self._stopping = True
            workers = list(self._workers.values())
        for worker in workers:
            if now:
                self._launcher.kill(worker.pid)
                continue
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        self._wake()
        if wait and threading.current_thread() is not self._reader:
            self._reader.join()
            for pid in self._exited:
                self.exit_codes[pid] = self._launcher.wait_exit(pid, EXIT_REPORT_TIMEOUT)

    def kill(self, slot: int) -> None:
        with self._lock:
            worker = self._workers.get(slot)
        if worker is not None:
            self._launcher.kill(worker.pid)

    def restart(self, slot: int) -> None:
        """Replace the slot's idle worker with a fresh fork (for worker recycling)."""
        with self._lock:
            worker = self._workers.pop(slot, None)
        if worker is not None:
            worker.retiring = True
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("stop",))
            with self._lock:
                self._retiring[worker.conn] = worker
        self._start_workers([slot])

    def worker_pids(self) -> list[int]:
        """The pids of the live workers (for tests and diagnostics)."""
        with self._lock:
            return [worker.pid for worker in self._workers.values() if not worker.conn.closed]

    # ------------------------------------------------------------------ sending

    def prepare(self, fn: Callable[..., Any], fn_id: int) -> FunctionRef:
        return FunctionRef(fn_id, fn, pack_for_workers(fn, f"the function {fn!r}"))

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        return pack_items(items, describe)

    def send(self, slot: int, work: ChunkWork) -> None:
        with self._lock:
            worker = self._workers.get(slot)
        if worker is None:
            return  # died meanwhile: the reader reports it lost
        items: Packed = work.payload
        with self._lock:
            self._shares_sent.update(items.share_ids)
        with worker.send_lock:
            if worker.reported:  # the scheduler requeues it when the successor is ready
                return
            worker.chunk_id = work.id
            try:
                self._send_function(worker, work.fn)
                worker.conn.send(("run", work.id, work.fn.id, int(work.kind)), items)
            except OSError:  # it is dead; the reader reports it, and this chunk never ran
                worker.unsent = True

    def _send_function(self, worker: _Worker, fn: FunctionRef) -> None:
        """Send the function unless the worker has it (and say which ones to forget)."""
        if fn.id in worker.functions:
            worker.functions.move_to_end(fn.id)
            return
        worker.functions[fn.id] = None
        forget = []
        while len(worker.functions) > FUNCTIONS_PER_WORKER:
            forget.append(worker.functions.popitem(last=False)[0])
        with self._lock:
            self._shares_sent.update(fn.blob.share_ids)
        worker.conn.send(("function", fn.id, forget), fn.blob)

    def _share_released(self, share_id: str) -> None:
        """A share died in the caller (called by the garbage collector: no locks here)."""
        self._released.append(share_id)
        self._wake()

    def _send_releases(self) -> None:
        """Tell the workers to unmap the shares the caller let go of."""
        released = []
        with self._lock:
            while self._released:
                share_id = self._released.popleft()
                if share_id in self._shares_sent:
                    self._shares_sent.discard(share_id)
                    released.append(share_id)
            workers = list(self._workers.values())
        if not released:
            return
        for worker in workers:
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("release", released))

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # ------------------------------------------------------------------ receiving

    def _read_loop(self) -> None:
        """Wait on every worker's socket; dispatch messages and deaths."""
        while True:
            with self._lock:
                if self._stopping and not self._workers and not self._retiring:
                    break
                by_conn = {worker.conn: worker for worker in self._workers.values()}
                by_conn.update(self._retiring)
            ready = wait([*by_conn, self._wake_r],  # type: ignore[list-item]
                         timeout=self._wait_timeout())
            self._check_memory()
            for conn in ready:
                if conn is self._wake_r:
                    self._wake_r.recv(4096)
                    self._send_releases()
                    continue
                worker = by_conn[conn]  # type: ignore[index]
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._on_death(worker)
                    continue
                self._on_message(worker, message)
        self._wake_r.close()
        self._wake_w.close()

    def _on_message(self, worker: _Worker, message: Message) -> None:
        tag = message.meta[0]
        if worker.retiring:
            message.discard()
            return
        if tag == "ready":
            worker.ready = True
            self._failed_starts.pop(worker.slot, None)
            self._events.worker_ready(worker.slot)
            return
        try:
            body = message.unpack()
        except Exception as exc:  # e.g. a result whose class can't be imported here
            error = SerializationError(
                f"a result from worker {worker.pid} cannot be unpickled here: {exc}")
            failure = Failure(error, "SerializationError", str(error), "")
            body = ([], {}, failure) if tag == "done" else failure
        if tag == "done":
            _, chunk_id, seconds = message.meta
            results, failures, error = body
            self._events.chunk_done(
                worker.slot, ChunkReport(chunk_id, results, failures, seconds, error, True)
            )
        elif tag == "init_failed":
            self._events.engine_broken(_initializer_error(self.setup, body))

    def _wait_timeout(self) -> float | None:
        if self.memory_limit is None:
            return None
        return max(0.0, self._next_memory_check - time.monotonic())

    def _check_memory(self) -> None:
        """Every MEMORY_CHECK_INTERVAL: kill the workers whose RSS is over the limit."""
        if self.memory_limit is None or time.monotonic() < self._next_memory_check:
            return
        self._next_memory_check = time.monotonic() + MEMORY_CHECK_INTERVAL
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                continue  # gone: its end of file is on its way
            if rss > self.memory_limit and worker.over_limit is None:
                worker.over_limit = rss
                self._launcher.kill(worker.pid)

    def _death_error(self, worker: _Worker, code: int | None) -> WorkerCrashed:
        if worker.over_limit is not None and self.memory_limit is not None:
            return MemoryLimitExceeded(
                f"worker process {worker.pid} used {_format_bytes(worker.over_limit)}, over "
                f"its memory_limit of {_format_bytes(self.memory_limit)}, and was killed",
                exitcode=code)
        return WorkerCrashed(
            f"worker process {worker.pid} died with {describe_exit(code)}", exitcode=code,
            started=not worker.unsent)

    def _on_death(self, worker: _Worker) -> None:
        """Report a dead worker (with why it died) and start its successor.

        Its entry stays in ``_workers`` until the successor replaces it, with its socket
        closed: a chunk sent meanwhile fails to write, so it is known never to have run.
        """
        with worker.send_lock:  # no send is writing to it now; later ones find it closed
            worker.conn.close()
        with self._lock:
            self._retiring.pop(worker.conn, None)
            stopping = self._stopping
        self._exited.append(worker.pid)
        if stopping or worker.retiring:
            self._forget(worker)
            return
        code = self._launcher.wait_exit(worker.pid, EXIT_REPORT_TIMEOUT)
        self._exited.remove(worker.pid)
        with worker.send_lock:  # from here on, sends to it are orphans, not losses
            worker.reported = True
            error = self._death_error(worker, code)
        if not worker.ready:
            self._failed_starts[worker.slot] = self._failed_starts.get(worker.slot, 0) + 1
            if self._failed_starts[worker.slot] >= FAILED_STARTS_LIMIT:
                self._forget(worker)  # workers cannot start: replacing them would loop
                self._events.engine_broken(error)
                return
        self._events.worker_lost(worker.slot, error)
        with self._lock:
            stopping = self._stopping  # losing that worker may have ended the pool's work
        if stopping:
            self._forget(worker)
            return
        try:
            self._start_workers([worker.slot])
        except Exception as exc:
            self._forget(worker)
            self._events.engine_broken(exc)

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(worker.slot) is worker:
                del self._workers[worker.slot]


def _format_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"  # pragma: no cover


def _initializer_error(setup: WorkerSetup, failure: Failure) -> InitializerFailed:
    error = InitializerFailed(
        f"the initializer {setup.initializer!r} raised in a worker process: "
        f"{failure.type_name}: {failure.message}. No task can run in this pool."
    )
    if failure.exc is not None:
        error.__cause__ = failure.exc
    return error
