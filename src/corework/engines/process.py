"""The process engine: worker processes forked by the launcher, each with task threads.

::

    scheduler ── send(slot, chunk) ──▶ worker socket ──▶ worker process (group slot % W)
        ▲                                                   task thread slot // W
        └── chunk_done / worker_lost ◀── reader thread ◀────┘  (one thread per pool,
                                                                waiting on every socket)

Workers are started by the process's single-threaded launcher (see ``_launcher``), so
a new or replacement worker costs a fork, not an interpreter start (``start_method=
"spawn"`` asks the launcher for fresh interpreters instead). A launcher that dies is
replaced on the next worker start. A worker that dies is reported as lost with its exit
code or signal, and replaced.

With ``threads=T`` each of the ``W`` worker processes runs T task threads: slot ``s`` is
thread ``s // W`` of process ``s % W`` (so slots added by :meth:`grow` get new numbers).
A process that dies costs every chunk running in it; the losses say which were bystanders
(``WorkerCrashed.collateral``: the process was stopped to end another task) and which
are suspects (``WorkerCrashed.shared``: nobody knows which task brought it down).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any, Protocol

from .. import _segments
from .._channel import Channel, Message
from .._errors import (
    CoreworkError,
    InitializerFailed,
    MemoryLimitExceeded,
    SerializationError,
    WorkerCrashed,
)
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
#: Launchers that may die in a row while a worker is being started, before giving up.
LAUNCHER_TRIES = 10
#: How often workers' memory is measured when a pool has a memory_limit.
MEMORY_CHECK_INTERVAL = 0.1
#: How long to wait for the launcher's report of a dead worker's exit code.
EXIT_REPORT_TIMEOUT = 5.0


class Prober(Protocol):
    """Watches how the first chunk's tasks use the GIL (``engine="auto"``, see _auto)."""

    seconds: float

    def probed(self, figures: dict[str, float]) -> int | None:
        """The probe's figures; returns the task threads each worker should have."""


class _Worker:
    """The caller's view of one worker process (the slots of one group)."""

    def __init__(self, index: int, pid: int, conn: Channel, threads: int,
                 launcher: LauncherClient) -> None:
        self.index = index
        self.pid = pid
        self.launcher = launcher  # the one that started it: it reports its exit
        self.conn = conn
        self.threads = threads  # task threads it has been told to run
        self.ready = False
        self.running: dict[int, int] = {}  # thread -> id of the chunk it was sent
        self.loading: dict[int, int] = {}  # function id -> threads sent it before "loaded"
        self.unsent: set[int] = set()  # threads whose chunk could not be written: dead
        self.killed_for: int | None = None  # the slot whose task kill() stopped
        self.probing = False  # its first chunk is being probed
        self.retiring = False  # told to exit by restart(): its end is no loss
        self.over_limit: int | None = None  # the RSS that got it killed
        self.reported = False  # its loss is being reported: a chunk sent now is an orphan
        self.doomed = False  # its launcher died, so it dies too: send it nothing more
        self.send_lock = threading.Lock()
        self.functions: OrderedDict[int, None] = OrderedDict()  # ids this worker holds


class ProcessEngine(Engine):
    """Slots are task threads of worker processes; see the module docstring."""

    def __init__(self, workers: int, setup: WorkerSetup, start_method: str = "fork",
                 memory_limit: int | None = None, prober: Prober | None = None) -> None:
        super().__init__(workers, setup)
        self.memory_limit = memory_limit
        self._next_memory_check = 0.0
        if start_method not in START_METHODS:
            raise ValueError(
                f"start_method must be one of {START_METHODS}, not {start_method!r}"
            )
        self.start_method = start_method
        self.threads = setup.threads
        self._prober = prober
        if prober is not None and not setup.elastic:
            raise ValueError("a probed pool's workers must be elastic")  # pragma: no cover
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._retiring: dict[Channel, _Worker] = {}  # recycled, exiting on their own
        self._failed_starts: dict[int, int] = {}  # group -> workers in a row that died unready
        self._exited: list[_Worker] = []  # workers gone, for stop(wait=True)
        self.exit_codes: dict[int, int | None] = {}  # pid -> exit code, once stopped
        self._stopping = False
        self._setup = pack_for_workers(  # multiprocessing's queues may be in initargs
            setup, f"the initializer {setup.initializer!r} or its initargs", spawning=True)
        self._shares_sent: set[str] = set()  # shares some worker may hold mapped
        self._released: deque[str] = deque()  # shares the caller let go of, to tell workers

    @property
    def slots(self) -> int:
        return self.workers * self.threads

    def group(self, slot: int) -> int:
        return slot % self.workers

    def _slot(self, worker: _Worker, thread: int) -> int:
        return worker.index + self.workers * thread

    # ------------------------------------------------------------------ lifecycle

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._launcher: LauncherClient = get_launcher()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)  # woken from garbage-collector callbacks too
        self._shares_sent.update(self._setup.share_ids)
        _segments.on_release(self._share_released)
        self._reader = threading.Thread(
            target=self._read_guarded, name="corework-process-reader", daemon=True
        )
        try:
            self._start_workers(list(range(self.workers)))
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._reader.start()  # while the new workers get going

    def _start_workers(self, indexes: list[int]) -> None:
        """Start a worker for each group; its setup waits in its socket before it exists."""
        pairs = [socket.socketpair() for _ in indexes]
        early = len(self._setup.data) <= SETUP_SENT_EARLY  # fits the socket buffer
        conns = [Channel(ours) for ours, _ in pairs]
        if early:
            for conn in conns:
                conn.send(("setup",), self._setup)
        theirs = [pair[1] for pair in pairs]
        try:
            pids, launcher = self._launch(theirs)
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
            for index, pid, conn in zip(indexes, pids, conns, strict=True):
                self._workers[index] = _Worker(index, pid, conn, self.setup.threads, launcher)
                if self._stopping:  # stop() ran meanwhile and could not tell this one
                    conn.send(("stop",))
        self._wake()

    def _launch(self, socks: list[socket.socket]) -> tuple[list[int], LauncherClient]:
        """Have a launcher start the workers (their pids, and that launcher); one that
        died is replaced (a few times in a row at most: a launcher that cannot live is an
        error, not a loop)."""
        for attempt in range(LAUNCHER_TRIES):
            launcher = self._launcher
            try:
                return launcher.start_workers(socks, self.start_method), launcher
            except LauncherDied:
                if attempt == LAUNCHER_TRIES - 1:
                    raise
                self._launcher = get_launcher()  # a new one, if that one is gone
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        with self._lock:
            self._stopping = True
            workers = list(self._workers.values())
        for worker in workers:
            if now:
                worker.launcher.kill(worker.pid, signal.SIGTERM if gently else signal.SIGKILL)
                continue
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        self._wake()
        if wait and threading.current_thread() is not self._reader:
            self._reader.join()
            while self._exited:  # once: a second stop() has nothing more to wait for
                gone = self._exited.pop()
                self.exit_codes[gone.pid] = gone.launcher.wait_exit(gone.pid,
                                                                    EXIT_REPORT_TIMEOUT)

    def kill(self, slot: int) -> None:
        with self._lock:
            worker = self._workers.get(self.group(slot))
            if worker is not None and worker.killed_for is None:
                worker.killed_for = slot
        if worker is not None:
            worker.launcher.kill(worker.pid)

    def restart(self, slot: int) -> None:
        """Replace the slot's idle worker with a fresh fork (for worker recycling, which
        the pool allows with one thread per worker only)."""
        with self._lock:
            worker = self._workers.pop(self.group(slot), None)
        if worker is not None:
            worker.retiring = True
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("stop",))
            with self._lock:
                self._retiring[worker.conn] = worker
        self._start_workers([self.group(slot)])

    def grow(self, threads: int) -> None:
        """Give every worker ``threads`` task threads; the new slots are announced ready."""
        with self._lock:
            if threads <= self.threads or self._stopping:
                return
            self.threads = threads
            grown = [worker for worker in self._workers.values() if worker.ready]
            old = {worker: worker.threads for worker in grown}
            for worker in grown:
                worker.threads = threads
        for worker in grown:
            self._add_threads(worker, old[worker])

    def _add_threads(self, worker: _Worker, had: int) -> None:
        """Tell ``worker`` to run ``worker.threads`` threads; announce the new slots."""
        with worker.send_lock:
            try:
                worker.conn.send(("threads", worker.threads))
            except OSError:
                return  # dead: its successor starts with the threads the pool has now
        for thread in range(had, worker.threads):
            self._events.worker_ready(self._slot(worker, thread))

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
        thread = slot // self.workers
        with self._lock:
            worker = self._workers.get(self.group(slot))
            if worker is None:
                return  # died meanwhile: the reader reports it lost
            items: Packed = work.payload
            self._shares_sent.update(items.share_ids)
            probe = self._probe_for(worker)
        with worker.send_lock:
            if worker.reported:  # it never runs: its loss (to come) or the successor's
                worker.unsent.add(thread)  # readiness puts it back in the queue
                return
            worker.running[thread] = work.id
            worker.loading.pop(thread, None)
            if worker.doomed:  # it cannot run this: the loss to come says so
                worker.unsent.add(thread)
                return
            try:
                self._send_function(worker, work.fn, thread)
                worker.conn.send(("run", work.id, work.fn.id, int(work.kind), thread, probe),
                                 items)
            except OSError:  # it is dead; the reader reports it, and this chunk never ran
                worker.unsent.add(thread)

    def _probe_for(self, worker: _Worker) -> float:
        """With the lock held: the probe's length if this chunk is the one to probe."""
        prober = self._prober
        if prober is None or any(w.probing for w in self._workers.values()):
            return 0.0
        worker.probing = True
        return prober.seconds

    def _send_function(self, worker: _Worker, fn: FunctionRef, thread: int) -> None:
        """Send the function unless the worker has it (and say which ones to forget)."""
        if fn.id in worker.functions:
            worker.functions.move_to_end(fn.id)
            if fn.id in worker.loading.values():
                worker.loading[thread] = fn.id  # still loading there: this waits for it
            return
        worker.functions[fn.id] = None
        worker.loading[thread] = fn.id
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

    def _read_guarded(self) -> None:
        """The reader thread. Should it fail anyway, the pool is declared broken, so that
        every pending task fails at once rather than wait for ever."""
        try:
            self._read_loop()
        except BaseException as exc:
            error = CoreworkError(
                f"corework's reader thread for this process pool failed "
                f"({type(exc).__name__}: {exc}); the pool's tasks cannot finish. "
                "Please report this as a bug.")
            error.__cause__ = exc
            with contextlib.suppress(BaseException):
                self._events.engine_broken(error)
            with contextlib.suppress(BaseException):
                self.stop(wait=False, now=True)

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
            self._on_ready(worker)
        elif tag == "done":
            self._on_done(worker, message)
        elif tag == "loaded":
            with worker.send_lock:
                for thread in [t for t, f in worker.loading.items() if f == message.meta[1]]:
                    del worker.loading[thread]
        elif tag == "probed":
            self._on_probed(worker, message.meta[1])
        elif tag == "init_failed":
            self._events.engine_broken(_initializer_error(self.setup, _body(message)))

    def _on_ready(self, worker: _Worker) -> None:
        with self._lock:
            worker.ready = True
            had, worker.threads = worker.threads, self.threads
        self._failed_starts.pop(worker.index, None)
        if worker.threads > had:  # the pool grew while this one started
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("threads", worker.threads))
        for thread in range(worker.threads):
            self._events.worker_ready(self._slot(worker, thread))

    def _on_done(self, worker: _Worker, message: Message) -> None:
        _, thread, chunk_id, seconds = message.meta
        with worker.send_lock:
            worker.running.pop(thread, None)
        body = _body(message)
        if isinstance(body, Failure):
            results, failures, error = [], {}, body
        else:
            results, failures, error = body
        self._events.chunk_done(self._slot(worker, thread),
                                ChunkReport(chunk_id, results, failures, seconds, error, True))

    def _on_probed(self, worker: _Worker, figures: dict[str, float]) -> None:
        with self._lock:
            worker.probing = False
            prober, self._prober = self._prober, None  # one probe per pool
        threads = prober.probed(figures) if prober is not None else None
        if threads is not None:
            self.grow(threads)

    def _wait_timeout(self) -> float | None:
        if self.memory_limit is None:
            return None
        return max(0.0, self._next_memory_check - time.monotonic())

    def _check_memory(self) -> None:
        """Every MEMORY_CHECK_INTERVAL: kill the workers whose RSS is over the limit."""
        if self.memory_limit is None or time.monotonic() < self._next_memory_check:
            return
        import psutil

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
                worker.launcher.kill(worker.pid)

    def _on_death(self, worker: _Worker) -> None:
        """Report a dead worker's slots lost (with why it died) and start its successor.

        Its entry stays in ``_workers`` until the successor replaces it, with its socket
        closed: a chunk sent meanwhile fails to write, so it is known never to have run.
        """
        with worker.send_lock:  # no send is writing to it now; later ones find it closed
            worker.conn.close()
        with self._lock:
            self._retiring.pop(worker.conn, None)
            stopping = self._stopping
            if worker.probing and self._prober is not None:
                worker.probing = False  # the next chunk sent is probed instead
        self._exited.append(worker)
        if stopping or worker.retiring:
            self._forget(worker)
            return
        code = worker.launcher.wait_exit(worker.pid, EXIT_REPORT_TIMEOUT)
        self._exited.remove(worker)
        if not worker.launcher.alive:
            self._doom(worker.launcher)
        with worker.send_lock:  # from here on, sends to it are orphans, not losses
            worker.reported = True
            death = self._death(worker, code)
        if not worker.ready:
            self._failed_starts[worker.index] = self._failed_starts.get(worker.index, 0) + 1
            if self._failed_starts[worker.index] >= FAILED_STARTS_LIMIT:
                self._forget(worker)  # workers cannot start: replacing them would loop
                self._events.engine_broken(death.error_for(0))
                return
        # Idle slots first, so that nothing is sent to them while the losses are told;
        # each error is made as its loss is told: a chunk sent meanwhile was an orphan.
        threads = sorted(range(max(worker.threads, 1)), key=lambda t: t in worker.running)
        for thread in threads:
            with worker.send_lock:
                error = death.error_for(thread)
            self._events.worker_lost(self._slot(worker, thread), error)
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        with self._lock:
            stopping = self._stopping  # losing that worker may have ended the pool's work
        if stopping:
            self._forget(worker)
            return
        try:
            self._start_workers([worker.index])
        except Exception as exc:
            self._forget(worker)
            self._events.engine_broken(exc)

    def _doom(self, launcher: LauncherClient) -> None:
        """A launcher died: its workers die with it (the kernel kills them), so no chunk
        is sent to one that may not have seen its end of file yet."""
        with self._lock:
            doomed = [w for w in self._workers.values() if w.launcher is launcher]
        for worker in doomed:
            with worker.send_lock:
                worker.doomed = True

    def _death(self, worker: _Worker, code: int | None) -> _Death:
        how = describe_exit(code) if code is not None or worker.launcher.alive else (
            "its launcher (the process that starts workers ended, and its workers with it)")
        return _Death(worker, code, how, self.memory_limit, self.workers)

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            if self._workers.get(worker.index) is worker:
                del self._workers[worker.index]


class _Death:
    """What a worker's death means for the chunk of each of its threads."""

    def __init__(self, worker: _Worker, code: int | None, how: str,
                 memory_limit: int | None, workers: int) -> None:
        self.worker = worker
        self.code = code
        self.what = f"worker process {worker.pid} died with {how}"
        self.memory_limit = memory_limit
        self.killed = None if worker.killed_for is None else worker.killed_for // workers
        running = [t for t in worker.running if t != self.killed]
        self.shared = len(running) > 1  # several chunks ran in it: which one was it?

    def error_for(self, thread: int) -> WorkerCrashed:
        """With the worker's send lock held: the error of the chunk ``thread`` ran (a
        chunk sent after the death was seen counts as never started)."""
        worker, code = self.worker, self.code
        if self.killed is not None and thread != self.killed:
            return WorkerCrashed(f"{self.what}: it was stopped to end another of its tasks",
                                 exitcode=code, collateral=True)
        if worker.over_limit is not None and self.memory_limit is not None:
            return MemoryLimitExceeded(
                f"worker process {worker.pid} used {_format_bytes(worker.over_limit)}, over "
                f"its memory_limit of {_format_bytes(self.memory_limit)}, and was killed",
                exitcode=code, shared=self.shared)
        started = thread not in worker.unsent and thread not in worker.loading
        return WorkerCrashed(self.what, exitcode=code, started=started, shared=self.shared)


def _body(message: Message) -> Any:
    """A message's body; whatever unpickling it raises (SystemExit too) becomes a Failure
    that says where it happened: the reader thread must outlive any result."""
    try:
        return message.unpack()
    except BaseException as exc:  # e.g. a class that can't be imported here
        error = SerializationError(
            f"the task's result could not be unpickled here, in the caller: "
            f"{type(exc).__name__}: {exc}", stage="unpickle-result", original=exc)
        error.__cause__ = exc
        return Failure(error, "SerializationError", str(error), "")


def _format_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"  # pragma: no cover


def _initializer_error(setup: WorkerSetup, failure: Any) -> InitializerFailed:
    error = InitializerFailed(
        f"the initializer {setup.initializer!r} raised in a worker process: "
        f"{failure.type_name}: {failure.message}. No task can run in this pool."
    )
    if failure.exc is not None:
        error.__cause__ = failure.exc
    return error
