"""The process engine: worker processes forked by the launcher, each with task threads.

::

    scheduler ── send(slot, chunk) ──▶ worker socket ──▶ worker process (group slot % W)
        ▲                                                   task thread slot // W
        └── chunk_done / worker_lost ◀── reader thread ◀────┘  (one thread per pool,
                                                                waiting on every socket)

Workers are started by the process's single-threaded launcher (see ``launcher``), so
a new or replacement worker costs a fork, not an interpreter start (``start_method=
"spawn"`` asks the launcher for fresh interpreters instead). A launcher that dies is
replaced on the next worker start. A worker that dies is reported as lost with its exit
code or signal, and replaced.

With ``threads=T`` each of the ``W`` worker processes runs T task threads: slot ``s`` is
thread ``s // W`` of process ``s % W`` (so slots added by :meth:`grow` get new numbers).
A process that dies costs every chunk running in it; the losses say which were bystanders
(``WorkerCrashed.collateral``: the process was stopped to end another task) and which
are suspects (``WorkerCrashed.shared``: nobody knows which task brought it down).

This module is the sending half (the scheduler's calls); the reader thread, the
receiving half, is ``reader``; a worker as the caller sees it, ``handle``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ..._errors import SerializationError
from ...transport import reuse as _reuse
from ...transport import segments as _segments
from ...transport.channel import Channel
from ...transport.inherited import holds
from ...transport.packing import Packed, pack_for_workers, pack_items
from ..contract import ChunkWork, Engine, EngineEvents, FunctionRef, Prober, WorkerSetup
from .handle import WorkerHandle
from .launcher import LauncherClient, LauncherDied, fork_own_launcher, get_launcher
from .reader import Reader

#: "fork": forked by the process's launcher; "spawn": fresh interpreters, started by it;
#: "fork-caller": forked by a launcher of the pool's own, forked from the caller at the
#: pool's start (multiprocessing's fork: the workers have the caller's state of then).
START_METHODS = ("fork", "spawn", "fork-caller")
#: How many task functions a worker keeps; older ones are forgotten and resent if needed.
FUNCTIONS_PER_WORKER = 32
#: Setups up to this size are queued in a worker's socket before the worker exists (they
#: fit its buffer); larger ones are sent once it runs.
SETUP_SENT_EARLY = 32 * 1024
#: Launchers that may die in a row while a worker is being started, before giving up.
LAUNCHER_TRIES = 10


class ProcessEngine(Engine):
    """Slots are task threads of worker processes; see the module docstring."""

    def __init__(self, workers: int, setup: WorkerSetup, start_method: str = "fork",
                 memory_limit: int | None = None, prober: Prober | None = None) -> None:
        super().__init__(workers, setup)
        self.memory_limit = memory_limit
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
        self._workers: dict[int, WorkerHandle] = {}
        self._retiring: dict[Channel, WorkerHandle] = {}  # recycled, exiting on their own
        self._exited: list[WorkerHandle] = []  # workers gone, for stop(wait=True)
        self.exit_codes: dict[int, int | None] = {}  # pid -> exit code, once stopped
        self._stopping = False
        self._setup = pack_for_workers(  # multiprocessing's queues may be in initargs
            setup, f"the initializer {setup.initializer!r} or its initargs", spawning=True)
        if self._setup.inherits and start_method == "spawn":
            raise SerializationError(
                f"cannot send the initargs of {setup.initializer!r} to workers started "
                "with start_method='spawn': they hold a multiprocessing lock made in a fork "
                "context, which only forked processes share. Leave start_method out, or "
                "make it with multiprocessing.get_context('spawn')", stage="pickle-argument")
        self._shares_sent: set[str] = set()  # shares some worker may hold mapped
        #: Launchers of this pool's own (see _new_launcher), closed when it stops or is
        #: collected, whichever comes first.
        self._own_launchers: list[LauncherClient] = []
        weakref.finalize(self, _close_launchers, self._own_launchers)

    @property
    def slots(self) -> int:
        return self.workers * self.threads

    def group(self, slot: int) -> int:
        return slot % self.workers

    def _slot(self, worker: WorkerHandle, thread: int) -> int:
        return worker.index + self.workers * thread

    # ------------------------------------------------------------------ lifecycle

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._launcher: LauncherClient = self._new_launcher()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)  # woken from garbage-collector callbacks too
        self._shares_sent.update(self._setup.share_ids)
        self._receiver = Reader(self)  # held here: segments hold its callback weakly
        _segments.on_release(self._receiver.share_released)
        self._reader = threading.Thread(
            target=self._receiver.run, name="corework-process-reader", daemon=True
        )
        try:
            self._start_workers(list(range(self.workers)), new_pool=True)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._reader.start()  # while the new workers get going

    def _start_workers(self, indexes: list[int], *, new_pool: bool = False) -> None:
        """Start a worker for each group; its setup waits in its socket before it exists.
        A new pool's workers are forked once the launcher has imported what this process
        had imported (see ``warmup``); a replacement's never wait for that."""
        pairs = [socket.socketpair() for _ in indexes]
        early = len(self._setup.data) <= SETUP_SENT_EARLY  # fits the socket buffer
        conns = [Channel(ours) for ours, _ in pairs]
        if early:
            for conn in conns:
                conn.send(("setup",), self._setup)
        theirs = [pair[1] for pair in pairs]
        try:
            pids, launcher = self._launch(theirs, new_pool)
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
                self._workers[index] = WorkerHandle(index, pid, conn, self.setup.threads, launcher)
                if self._stopping:  # stop() ran meanwhile and could not tell this one
                    conn.send(("stop",))
        self._wake()

    def _launch(self, socks: list[socket.socket], warm: bool
                ) -> tuple[list[int], LauncherClient]:
        """Have a launcher start the workers (their pids, and that launcher); one that
        died is replaced (a few times in a row at most: a launcher that cannot live is an
        error, not a loop)."""
        for attempt in range(LAUNCHER_TRIES):
            launcher = self._launcher
            try:
                mode = "spawn" if self.start_method == "spawn" else "fork"
                return launcher.start_workers(socks, mode, warm=warm), launcher
            except (LauncherDied, TimeoutError):
                if attempt == LAUNCHER_TRIES - 1:
                    raise
                launcher.retire("(it did not answer in time)")
                self._launcher = self._new_launcher()  # if that one is gone
        raise AssertionError("unreachable")  # pragma: no cover

    def _new_launcher(self) -> LauncherClient:
        """The process's launcher; or one of this pool's own, forked now: with
        "fork-caller", or when the setup holds fork-context semaphores that the process's
        launcher, forked before them, lacks (see ``transport.inherited``)."""
        if self.start_method != "fork-caller":
            launcher = get_launcher()
            if not self._setup.inherits or holds(launcher.pid, self._setup.inherits):
                return launcher
        launcher = fork_own_launcher()
        self._own_launchers.append(launcher)
        return launcher

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
                self.exit_codes[gone.pid] = gone.wait_exit()
            _close_launchers(self._own_launchers)  # the pool's own: its workers are gone

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

    def _add_threads(self, worker: WorkerHandle, had: int) -> None:
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

    def sending_pass(self) -> contextlib.AbstractContextManager[None]:
        return _reuse.sending_pass()

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

    def _probe_for(self, worker: WorkerHandle) -> float:
        """With the lock held: the probe's length if this chunk is the one to probe."""
        prober = self._prober
        if prober is None or any(w.probing for w in self._workers.values()):
            return 0.0
        worker.probing = True
        return prober.seconds

    def _send_function(self, worker: WorkerHandle, fn: FunctionRef, thread: int) -> None:
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

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")


def _close_launchers(launchers: list[LauncherClient]) -> None:
    for launcher in launchers:
        launcher.close()
