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
receiving half, is ``reader``; the table of workers both use, ``workers``; a worker as
the caller sees it, ``handle``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..._errors import SerializationError
from ...transport import reuse as _reuse
from ...transport import segments as _segments
from ...transport.channel import Channel
from ...transport.packing import Packed, pack_for_workers, pack_items
from ..contract import ChunkWork, Engine, EngineEvents, FunctionRef, Prober, WorkerSetup
from .handle import WorkerHandle
from .launchers import PoolLaunchers
from .reader import Reader
from .workers import SharesSent, Workers

#: "fork": forked by the process's launcher; "spawn": fresh interpreters, started by it;
#: "fork-caller": forked by a launcher of the pool's own, forked from the caller at the
#: pool's start (multiprocessing's fork: the workers have the caller's state of then).
START_METHODS = ("fork", "spawn", "fork-caller")
#: Setups up to this size are queued in a worker's socket before the worker exists (they
#: fit its buffer); larger ones are sent once it runs.
SETUP_SENT_EARLY = 32 * 1024


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
        if prober is not None and not setup.elastic:
            raise ValueError("a probed pool's workers must be elastic")  # pragma: no cover
        self._table = Workers(setup.threads, prober)
        self._shares_sent = SharesSent()
        self.exit_codes: dict[int, int | None] = {}  # pid -> exit code, once stopped
        self._setup = pack_for_workers(  # multiprocessing's queues may be in initargs
            setup, f"the initializer {setup.initializer!r} or its initargs", spawning=True)
        if self._setup.inherits and start_method == "spawn":
            raise SerializationError(
                f"cannot send the initargs of {setup.initializer!r} to workers started "
                "with start_method='spawn': they hold a multiprocessing lock made in a fork "
                "context, which only forked processes share. Leave start_method out, or "
                "make it with multiprocessing.get_context('spawn')", stage="pickle-argument")

    @property
    def threads(self) -> int:
        """Task threads in each worker process now (``grow`` adds some)."""
        return self._table.threads

    @property
    def slots(self) -> int:
        return self.workers * self.threads

    def group(self, slot: int) -> int:
        return slot % self.workers

    def slot_of(self, worker: WorkerHandle, thread: int) -> int:
        """The slot that is task thread ``thread`` of ``worker``."""
        return worker.index + self.workers * thread

    # ------------------------------------------------------------------ lifecycle

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._launchers = PoolLaunchers(self.start_method == "fork-caller",
                                        self._setup.inherits)
        self._shares_sent.add(self._setup.share_ids)
        # Held here: segments hold its callback weakly.
        self._receiver = Reader(self, self._table, self._shares_sent, events)
        _segments.on_release(self._receiver.share_released)
        self._reader = threading.Thread(
            target=self._receiver.run, name="corework-process-reader", daemon=True
        )
        try:
            self.start_workers(list(range(self.workers)), new_pool=True)
        except BaseException:
            self._receiver.close()
            raise
        self._reader.start()  # while the new workers get going

    def start_workers(self, indexes: list[int], *, new_pool: bool = False) -> None:
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
            mode = "spawn" if self.start_method == "spawn" else "fork"
            pids, launcher = self._launchers.start_workers(theirs, mode, warm=new_pool)
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
        for index, pid, conn in zip(indexes, pids, conns, strict=True):
            worker = WorkerHandle(index, pid, conn, self.setup.threads, launcher)
            if self._table.add(worker):  # stop() ran meanwhile and could not tell this one
                with worker.send_lock, contextlib.suppress(OSError):
                    conn.send(("stop",))
        self._receiver.wake()

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        for worker in self._table.stop_all():
            if now:
                worker.launcher.kill(worker.pid, signal.SIGTERM if gently else signal.SIGKILL)
                continue
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        self._receiver.wake()
        if wait and threading.current_thread() is not self._reader:
            self._reader.join()
            for gone in self._table.take_exited():  # once: a second stop() waits for none
                self.exit_codes[gone.pid] = gone.wait_exit()
            self._launchers.close_own()  # its workers are gone

    def kill(self, slot: int) -> None:
        worker = self._table.mark_killed(self.group(slot), slot)
        if worker is not None:
            worker.launcher.kill(worker.pid)

    def restart(self, slot: int) -> None:
        """Replace the slot's idle worker with a fresh fork (for worker recycling, which
        the pool allows with one thread per worker only)."""
        worker = self._table.retire(self.group(slot))
        if worker is not None:
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        self.start_workers([self.group(slot)])

    def grow(self, threads: int) -> None:
        """Give every worker ``threads`` task threads; the new slots are announced ready."""
        for worker, had in self._table.grow(threads):
            with worker.send_lock:
                try:
                    worker.conn.send(("threads", worker.threads))
                except OSError:
                    continue  # dead: its successor starts with the threads the pool has
            for thread in range(had, worker.threads):
                self._events.worker_ready(self.slot_of(worker, thread))

    def worker_pids(self) -> list[int]:
        """The pids of the live workers (for tests and diagnostics)."""
        return [w.pid for w in self._table.snapshot() if not w.conn.closed]

    # ------------------------------------------------------------------ sending

    def prepare(self, fn: Callable[..., Any], fn_id: int) -> FunctionRef:
        return FunctionRef(fn_id, fn, pack_for_workers(fn, f"the function {fn!r}"))

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        return pack_items(items, describe)

    def sending_pass(self) -> contextlib.AbstractContextManager[None]:
        return _reuse.sending_pass()

    def send(self, slot: int, work: ChunkWork) -> None:
        thread = slot // self.workers
        items: Packed = work.payload
        to = self._table.sending_to(self.group(slot))
        if to is None:
            return  # died meanwhile: the reader reports it lost
        worker, probe = to
        self._shares_sent.add(items.share_ids)
        with worker.send_lock:
            if worker.reported:  # it never runs: its loss (to come) or the successor's
                worker.unsent.add(thread)  # readiness puts it back in the queue
                return
            worker.running[thread] = work.id
            worker.firsts[thread] = work.first
            worker.loading.pop(thread, None)
            if worker.doomed:  # it cannot run this: the loss to come says so
                worker.unsent.add(thread)
                return
            try:
                worker.send_function(work.fn, thread, self._shares_sent.add)
                worker.conn.send(("run", work.id, work.fn.id, int(work.kind), thread, probe),
                                 items)
            except OSError:  # it is dead; the reader reports it, and this chunk never ran
                worker.unsent.add(thread)

