"""The process engine's table of workers, shared by its sending half (``engine``) and its
reader thread (``reader``): the live worker of each group, recycled ones exiting on their
own, dead ones still to reap, the one probe of a pool, the task threads per worker, and
whether the pool is stopping — under one lock, changed only through the verbs below, each
one step that must not be seen half done. Beside it, the shares some worker may hold."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ...transport.channel import Channel
from ..contract import Prober
from .handle import WorkerHandle

__all__ = ["SharesSent", "Workers"]


class Workers:
    """Who the workers are and what each side may do with them (see the module docstring)."""

    def __init__(self, threads: int, prober: Prober | None) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, WorkerHandle] = {}  # group -> its worker
        self._retiring: dict[Channel, WorkerHandle] = {}  # recycled, exiting on their own
        self._exited: list[WorkerHandle] = []  # dead, their exit codes not yet reaped
        self._prober = prober  # until the one probe of the pool reports
        self._stopping = False
        self.threads = threads  # task threads in each worker process now

    # ------------------------------------------------------------------ the sending half

    def add(self, handle: WorkerHandle) -> bool:
        """``handle`` is its group's worker now; True if the pool is stopping (then
        ``stop_all`` did not see it, and it must be told to stop)."""
        with self._lock:
            self._live[handle.index] = handle
            return self._stopping

    def sending_to(self, group: int) -> tuple[WorkerHandle, float] | None:
        """The group's worker and, if this chunk is the one to probe, the probe's length
        (0.0 if not); None if the group has no worker (its loss is being reported)."""
        with self._lock:
            worker = self._live.get(group)
            if worker is None:
                return None
            prober = self._prober
            if prober is None or any(w.probing for w in self._live.values()):
                return worker, 0.0
            worker.probing = True
            return worker, prober.seconds

    def mark_killed(self, group: int, slot: int) -> WorkerHandle | None:
        """The group's worker, to be killed for the task of ``slot`` (the first kill
        names the task; the others are its bystanders)."""
        with self._lock:
            worker = self._live.get(group)
            if worker is not None and worker.killed_for is None:
                worker.killed_for = slot
            return worker

    def retire(self, group: int) -> WorkerHandle | None:
        """Take the group's worker out of service: it exits on its own, which is no loss."""
        with self._lock:
            worker = self._live.pop(group, None)
            if worker is not None:
                worker.retiring = True
                self._retiring[worker.conn] = worker
            return worker

    def grow(self, threads: int) -> list[tuple[WorkerHandle, int]]:
        """Each ready worker, told to run ``threads`` threads now, with how many it had
        (none if that is no growth, or the pool is stopping)."""
        with self._lock:
            if threads <= self.threads or self._stopping:
                return []
            self.threads = threads
            grown = [(w, w.threads) for w in self._live.values() if w.ready]
            for worker, _ in grown:
                worker.threads = threads
            return grown

    def stop_all(self) -> list[WorkerHandle]:
        """The pool stops: the live workers, to tell or kill."""
        with self._lock:
            self._stopping = True
            return list(self._live.values())

    def take_exited(self) -> list[WorkerHandle]:
        """The dead workers whose exit codes nobody has reaped yet (each only once)."""
        with self._lock:
            exited, self._exited = self._exited, []
            return exited

    # ------------------------------------------------------------------ the reader

    def watched(self) -> dict[Channel, WorkerHandle] | None:
        """Every socket the reader waits on, live and retiring; None once the pool has
        stopped and every worker is gone."""
        with self._lock:
            if self._stopping and not self._live and not self._retiring:
                return None
            by_conn = {worker.conn: worker for worker in self._live.values()}
            by_conn.update(self._retiring)
            return by_conn

    def snapshot(self) -> list[WorkerHandle]:
        """The live workers now."""
        with self._lock:
            return list(self._live.values())

    def stopping(self) -> bool:
        with self._lock:
            return self._stopping

    def mark_ready(self, worker: WorkerHandle) -> int:
        """``worker`` said it is ready; it runs the pool's threads now. How many it had."""
        with self._lock:
            worker.ready = True
            had, worker.threads = worker.threads, self.threads
            return had

    def take_prober(self, worker: WorkerHandle) -> Prober | None:
        """The probe ran in ``worker``: the prober, to hand the figures to (only once)."""
        with self._lock:
            worker.probing = False
            prober, self._prober = self._prober, None
            return prober

    def dead(self, worker: WorkerHandle) -> bool:
        """``worker``'s socket closed: it is dead, to be reaped. True if the pool is
        stopping. A probe it was running goes to the next chunk sent."""
        with self._lock:
            self._retiring.pop(worker.conn, None)
            if worker.probing and self._prober is not None:
                worker.probing = False
            self._exited.append(worker)
            return self._stopping

    def reaped(self, worker: WorkerHandle) -> None:
        """The reader has its exit code itself: ``take_exited`` need not wait for it."""
        with self._lock:
            if worker in self._exited:
                self._exited.remove(worker)

    def forget(self, worker: WorkerHandle) -> None:
        """``worker`` is gone for good and no successor takes its group."""
        with self._lock:
            if self._live.get(worker.index) is worker:
                del self._live[worker.index]


class SharesSent:
    """The shares (``transport.segments``) some worker may hold mapped, so that the
    workers are told when the caller lets go of one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def add(self, share_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.update(share_ids)

    def take(self, share_ids: Iterable[str]) -> list[str]:
        """Those of ``share_ids`` that were sent (each is taken once)."""
        with self._lock:
            taken = [share_id for share_id in share_ids if share_id in self._ids]
            self._ids.difference_update(taken)
            return taken
