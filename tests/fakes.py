"""A fake engine and a fake clock: the scheduler's decisions, tested without workers,
threads of corework's engines or real time (see tests/test_scheduler_decisions.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from corework import WorkerCrashed
from corework.engines import ChunkWork, Engine, EngineEvents, WorkerSetup
from corework.engines.runner import run_chunk

BOUND = 10.0  # seconds: the most any wait here takes, should the scheduler be wrong


class FakeClock:
    """Time moves only when the test says: ``advance(seconds)``. The timer thread's
    sleep ends only when woken, and ``advance`` returns once that thread has acted on
    the new time and is asleep again, so what a deadline does is done when it returns.
    (Call it only once the scheduler has a deadline or a delay: a timer thread.)"""

    def __init__(self) -> None:
        self.time = 1000.0
        self._wakeup: threading.Condition | None = None
        self._sleeps = 0  # times the timer thread has gone to sleep
        self._sleeping = False
        self._asleep = threading.Condition()

    def now(self) -> float:
        return self.time

    def sleep(self, wakeup: threading.Condition, seconds: float | None) -> None:
        with self._asleep:
            self._wakeup = wakeup
            self._sleeps += 1
            self._sleeping = True
            self._asleep.notify_all()
        try:
            wakeup.wait()  # no timeout: only a notify (a new deadline, advance, stop) wakes
        finally:
            with self._asleep:
                self._sleeping = False

    def advance(self, seconds: float) -> None:
        with self._asleep:
            assert self._asleep.wait_for(lambda: self._sleeping, BOUND), "no timer thread"
            wakeup = self._wakeup
        assert wakeup is not None
        self.time += seconds
        with wakeup:  # the timer thread is asleep, or busy outside the lock
            with self._asleep:
                before = self._sleeps
            wakeup.notify_all()
        with self._asleep:
            assert self._asleep.wait_for(lambda: self._sleeps > before, BOUND)


class FakeEngine(Engine):
    """An engine whose workers are the test: it records what the scheduler sends, kills
    and restarts, and the test says when a worker is ready, a chunk ends or a worker dies.
    ``per_group`` slots share a worker process (as the process engine's ``threads=``)."""

    def __init__(self, slots: int = 2, per_group: int = 1) -> None:
        super().__init__(slots // per_group, WorkerSetup())
        self._slots = slots
        self._per_group = per_group
        self.running: dict[int, ChunkWork] = {}
        self.sent: list[tuple[int, list[Any]]] = []  # (slot, items), in order
        self.killed: list[int] = []
        self.restarted: list[int] = []
        self.stopped = False
        self._changed = threading.Condition()

    @property
    def slots(self) -> int:
        return self._slots

    def group(self, slot: int) -> int:
        return slot // self._per_group

    def start(self, events: EngineEvents) -> None:
        self._events = events

    def send(self, slot: int, work: ChunkWork) -> None:
        with self._changed:
            assert slot not in self.running, f"slot {slot} was sent two chunks at once"
            self.running[slot] = work
            self.sent.append((slot, list(work.items)))
            self._changed.notify_all()

    def kill(self, slot: int) -> None:
        with self._changed:
            self.running.pop(slot, None)
            self.killed.append(slot)
            self._changed.notify_all()

    def restart(self, slot: int) -> None:
        self.restarted.append(slot)

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        self.stopped = True

    # ------------------------------------------------------------ the test's side

    def ready(self, *slots: int) -> None:
        """The workers of ``slots`` have started (or been replaced)."""
        for slot in slots or range(self._slots):
            self._events.worker_ready(slot)

    def finish(self, slot: int) -> None:
        """The chunk on ``slot`` runs now, in this thread, and reports."""
        with self._changed:
            work = self.running.pop(slot)
        self._events.chunk_done(slot, run_chunk(work.id, work.fn.fn, work.kind, work.items))

    def crash(self, slot: int, **why: Any) -> None:
        """The worker of ``slot`` dies (``why``: WorkerCrashed's started/shared/...)."""
        with self._changed:
            self.running.pop(slot, None)
        self._events.worker_lost(slot, WorkerCrashed("the worker died (fake)", **why))

    def wait_for(self, condition: Callable[[FakeEngine], bool]) -> None:
        """Until ``condition(self)`` holds (what another thread, the timer, does)."""
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), BOUND)
