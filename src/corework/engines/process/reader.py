"""The process engine's reader thread: the receiving half of the engine. One thread per
pool waits on every worker's socket, hands reports to the scheduler, tells it of a dead
worker's losses and starts the successor. What it shares with the sending half is the
table of workers (``workers``) and the engine's public calls (``Host``).
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time
from collections import deque
from typing import Any, Protocol

from ..._errors import CoreworkError
from ..._signals import block_in_this_thread
from ...transport.channel import Message
from ...transport.failure import Failure
from ..contract import ChunkReport, EngineEvents, WorkerSetup, initializer_failed
from .handle import Death, WorkerHandle, unpack_body
from .launcher import LauncherClient
from .workers import SharesSent, Workers


class Host(Protocol):
    """What the reader asks of its engine (``ProcessEngine``, the sending half)."""

    setup: WorkerSetup
    workers: int
    memory_limit: int | None

    def slot_of(self, worker: WorkerHandle, thread: int) -> int: ...

    def start_workers(self, indexes: list[int], *, new_pool: bool = False) -> None: ...

    def grow(self, threads: int) -> None: ...

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None: ...


__all__ = ["FAILED_STARTS_LIMIT", "MEMORY_CHECK_INTERVAL", "Reader"]

#: Workers of one slot that may die in a row before being ready, before the pool is
#: declared broken: enough that one killed from outside while starting is no reason to
#: give up, few enough that a worker that cannot start is not respawned forever.
FAILED_STARTS_LIMIT = 10
#: How often workers' memory is measured when a pool has a memory_limit.
MEMORY_CHECK_INTERVAL = 0.1


class Reader:
    """The reader thread's work for one engine (see the module docstring)."""

    def __init__(self, engine: Host, table: Workers, shares_sent: SharesSent,
                 events: EngineEvents) -> None:
        self.engine = engine
        self.table = table
        self.shares_sent = shares_sent
        self.events = events
        self.memory = _MemoryWatch(engine.memory_limit)
        self.failed_starts: dict[int, int] = {}  # group -> workers in a row that died unready
        self.released: deque[str] = deque()  # shares the caller let go of, to tell workers
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)  # woken from garbage-collector callbacks too

    def wake(self) -> None:
        """Make the thread look at the table again (a worker started, the pool stops)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        """The thread has ended, or never started."""
        self._wake_r.close()
        self._wake_w.close()

    def run(self) -> None:
        """The reader thread. Should it fail anyway, the pool is declared broken, so that
        every pending task fails at once rather than wait for ever."""
        block_in_this_thread()  # Ctrl-C is the main thread's (see corework._signals)
        try:
            self._loop()
        except BaseException as exc:
            error = CoreworkError(
                f"corework's reader thread for this process pool failed "
                f"({type(exc).__name__}: {exc}); the pool's tasks cannot finish. "
                "Please report this as a bug.")
            error.__cause__ = exc
            with contextlib.suppress(BaseException):
                self.events.engine_broken(error)
            with contextlib.suppress(BaseException):
                self.engine.stop(wait=False, now=True)

    def _loop(self) -> None:
        """Wait on every worker's socket; dispatch messages and deaths."""
        while (by_conn := self.table.watched()) is not None:
            ready = _readable([*by_conn, self._wake_r], self.memory.timeout())
            self.memory.check(self.table)
            for conn in ready:
                if conn is self._wake_r:
                    self._wake_r.recv(4096)
                    self._send_releases()
                    continue
                worker = by_conn[conn]
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._on_death(worker)
                    continue
                self._on_message(worker, message)
        self.close()

    def share_released(self, share_id: str) -> None:
        """A share died in the caller (called by the garbage collector: no locks here)."""
        self.released.append(share_id)
        self.wake()

    def _send_releases(self) -> None:
        """Tell the workers to unmap the shares the caller let go of."""
        let_go = []
        while self.released:
            let_go.append(self.released.popleft())
        released = self.shares_sent.take(let_go)
        if not released:
            return
        for worker in self.table.snapshot():
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("release", released))

    # ------------------------------------------------------------------ messages

    def _on_message(self, worker: WorkerHandle, message: Message) -> None:
        tag = message.meta[0]
        if tag == "log":  # even from a retiring worker: its last words count
            self._on_log(worker, message.meta)
            return
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
            error = initializer_failed(self.engine.setup, "in a worker process",
                                       unpack_body(message))
            self.events.engine_broken(error)

    def _on_log(self, worker: WorkerHandle, meta: tuple[Any, ...]) -> None:
        """A record a worker logged: to this process's handlers, naming its task if it
        came from the chunk that thread runs now (see ``log_relay``)."""
        from ..log_relay import relay

        _, thread, chunk_id, position, fields = meta
        # No send lock: a sender holds it while it blocks on a full socket, which only
        # this thread empties. The reads are safe without it: a thread's chunk changes
        # only after its "done", which this thread reads after this record.
        running = thread is not None and worker.running.get(thread) == chunk_id
        first = worker.firsts.get(thread) if running else None
        relay(fields, worker.index, first, position)

    def _on_ready(self, worker: WorkerHandle) -> None:
        had = self.table.mark_ready(worker)
        self.failed_starts.pop(worker.index, None)
        if worker.threads > had:  # the pool grew while this one started
            with worker.send_lock, contextlib.suppress(OSError):
                worker.conn.send(("threads", worker.threads))
        for thread in range(worker.threads):
            self.events.worker_ready(self.engine.slot_of(worker, thread))

    def _on_done(self, worker: WorkerHandle, message: Message) -> None:
        _, thread, chunk_id, seconds = message.meta
        with worker.send_lock:
            worker.running.pop(thread, None)
        body = unpack_body(message)
        if isinstance(body, Failure):
            results, failures, error = [], {}, body
        else:
            results, failures, error = body
        self.events.chunk_done(
            self.engine.slot_of(worker, thread),
            ChunkReport(chunk_id, results, failures, seconds, error, True))

    def _on_probed(self, worker: WorkerHandle, figures: dict[str, float]) -> None:
        prober = self.table.take_prober(worker)  # one probe per pool
        threads = prober.probed(figures) if prober is not None else None
        if threads is not None:
            self.engine.grow(threads)

    # ------------------------------------------------------------------ deaths

    def _on_death(self, worker: WorkerHandle) -> None:
        """Report a dead worker's slots lost (with why it died) and start its successor.

        Its entry stays in the table of workers until the successor replaces it, with its
        socket closed: a chunk sent meanwhile fails to write, so it is known never to have
        run.
        """
        engine = self.engine
        with worker.send_lock:  # no send is writing to it now; later ones find it closed
            worker.conn.close()
        if self.table.dead(worker) or worker.retiring:  # the pool stops, or no loss
            self.table.forget(worker)
            return
        code = worker.wait_exit()
        self.table.reaped(worker)
        if not worker.launcher.alive:
            self._doom(worker.launcher)
        with worker.send_lock:  # from here on, sends to it are orphans, not losses
            worker.reported = True
            death = Death.of(worker, code, engine.memory_limit, engine.workers)
        if not worker.ready and self._failed_to_start(worker):
            self.table.forget(worker)  # workers cannot start: replacing them would loop
            self.events.engine_broken(death.error_for(0))
            return
        # Idle slots first, so that nothing is sent to them while the losses are told;
        # each error is made as its loss is told: a chunk sent meanwhile was an orphan.
        threads = sorted(range(max(worker.threads, 1)), key=lambda t: t in worker.running)
        for thread in threads:
            with worker.send_lock:
                error = death.error_for(thread)
            self.events.worker_lost(engine.slot_of(worker, thread), error)
        self._replace(worker)

    def _failed_to_start(self, worker: WorkerHandle) -> bool:
        """Count a worker that died unready; whether its group has failed too often."""
        self.failed_starts[worker.index] = self.failed_starts.get(worker.index, 0) + 1
        return self.failed_starts[worker.index] >= FAILED_STARTS_LIMIT

    def _replace(self, worker: WorkerHandle) -> None:
        if self.table.stopping():  # losing that worker may have ended the pool's work
            self.table.forget(worker)
            return
        try:
            self.engine.start_workers([worker.index])
        except Exception as exc:
            self.table.forget(worker)
            self.events.engine_broken(exc)

    def _doom(self, launcher: LauncherClient) -> None:
        """A launcher died: its workers die with it (the kernel kills them), so no chunk
        is sent to one that may not have seen its end of file yet."""
        for worker in [w for w in self.table.snapshot() if w.launcher is launcher]:
            with worker.send_lock:
                worker.doomed = True


class _MemoryWatch:
    """Every MEMORY_CHECK_INTERVAL, kills the workers whose RSS is over the pool's limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.next_check = 0.0

    def timeout(self) -> float | None:
        """How long the reader may wait before the next check (None: no limit to watch)."""
        if self.limit is None:
            return None
        return max(0.0, self.next_check - time.monotonic())

    def check(self, table: Workers) -> None:
        """Measure the live workers if it is time; kill those over the limit."""
        if self.limit is None or time.monotonic() < self.next_check:
            return
        import psutil

        self.next_check = time.monotonic() + MEMORY_CHECK_INTERVAL
        for worker in table.snapshot():
            try:
                rss = psutil.Process(worker.pid).memory_info().rss
            except psutil.Error:
                continue  # gone: its end of file is on its way
            if rss > self.limit and worker.over_limit is None:
                worker.over_limit = rss
                worker.launcher.kill(worker.pid)


def _readable(objects: list[Any], timeout: float | None) -> list[Any]:
    """Those of ``objects`` (sockets, channels) ready to read or closed, waiting at most
    ``timeout`` seconds: ``multiprocessing.connection.wait`` on Linux, without importing
    that module (and its subprocess and tempfile) into the caller and every worker."""
    poller = select.poll()
    by_fd = {}
    for obj in objects:
        by_fd[obj.fileno()] = obj
        poller.register(obj.fileno(), select.POLLIN)
    milliseconds = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return [by_fd[fd] for fd, _ in poller.poll(milliseconds)]
