"""Slots that are threads of this process, each with an inbox: the lifecycle that the
thread and interpreter engines share (the idea of CPython 3.14's ``WorkerContext``).

The base starts a thread per slot, sends chunks to its inbox, retires a slot (its task
interrupted, a fresh thread in its place) and stops them all. An engine supplies what its
thread does (:meth:`SlotEngine.serve`: set up, then :meth:`SlotEngine.serve_chunks` with
how to run one chunk) and how to interrupt a running task (:meth:`Slot.interrupt`)."""

from __future__ import annotations

import abc
import queue
import threading
from collections.abc import Callable

from ..._errors import Cancelled
from ..contract import ChunkReport, ChunkWork, Engine, EngineEvents

STOP = None  # in an inbox: the slot's thread is to end


def _checkpoint() -> None:
    """A Python-level call: lets a pending interrupt fire here, inside the serving loop."""


class Slot:
    """One slot's thread, its inbox and the chunk it runs (``running``, under ``lock``)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.inbox: queue.SimpleQueue[ChunkWork | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.running: int | None = None  # id of the chunk being run
        self.retired = False  # kill(), restart() or stop(now): this thread has lost it
        self.thread: threading.Thread | None = None

    def interrupt(self) -> None:
        """Stop the task running now (the engine's own way)."""
        raise NotImplementedError

    def abandoned(self) -> bool:
        """Interrupted and still running: its task is blocked in C code, and the thread
        ends when that call returns — no one waits for it (``kill()`` promised that)."""
        with self.lock:
            return self.retired and self.running is not None


class SlotEngine(Engine):
    """An engine whose slots are threads of this process (see the module docstring)."""

    #: Slot N's thread is named ``{thread_name}-N`` (unless ``setup.thread_names``).
    thread_name = "corework-slot"

    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._slots = [self.new_slot(index) for index in range(self.workers)]
        for slot in self._slots:  # only now: a thread may call stop() at once
            self._start_thread(slot)

    @abc.abstractmethod
    def new_slot(self, index: int) -> Slot:
        """A fresh slot (its thread not started yet)."""

    @abc.abstractmethod
    def serve(self, slot: Slot) -> None:
        """The slot's thread: set up, report ``worker_ready``, ``serve_chunks``."""

    def serve_chunks(self, slot: Slot, run: Callable[[ChunkWork], ChunkReport]) -> None:
        """Run each chunk of the inbox with ``run`` until told to stop or retired. Nothing
        of a chunk outlives its turn (a thread waiting for work holds no task's data)."""
        while True:
            work = slot.inbox.get()
            if work is STOP:
                return
            report = run(work)
            with slot.lock:
                slot.running = None
            _checkpoint()
            if slot.retired:
                return  # kill() or restart() has already handed the slot on
            self._events.chunk_done(slot.index, report)
            del work, report

    def send(self, slot: int, work: ChunkWork) -> None:
        target = self._slots[slot]
        with target.lock:  # running from now: kill() and stop(now=True) must see it
            target.running = work.id
        target.inbox.put(work)

    def kill(self, slot: int) -> None:
        """Interrupt the slot's task; a fresh thread takes the slot at once. (A task blocked
        in C code is abandoned: it ends when that call returns.)"""
        self.retire(slot, lost=Cancelled("the task was interrupted by kill()"))

    def restart(self, slot: int) -> None:
        """Replace the slot's idle thread with a fresh one (worker recycling)."""
        self.retire(slot)

    def retire(self, slot: int, lost: BaseException | None = None) -> None:
        """Interrupt what the slot runs, if anything, and give it a fresh thread — after
        reporting ``lost``, so the fresh thread's ``worker_ready`` comes after it."""
        old = self._slots[slot]
        with old.lock:
            old.retired = True
            if old.running is not None:
                old.interrupt()
        old.inbox.put(STOP)
        if lost is not None:
            self._events.worker_lost(slot, lost)
        self._slots[slot] = self.new_slot(slot)
        self._start_thread(self._slots[slot])

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        abandoned = set()
        for slot in self._slots:
            if now:
                with slot.lock:
                    slot.retired = True
                    if slot.running is not None:
                        slot.interrupt()
                        abandoned.add(slot.index)
            slot.inbox.put(STOP)
        if wait:
            current = threading.current_thread()
            for slot in self._slots:
                if slot.index not in abandoned and not slot.abandoned() \
                        and slot.thread not in (None, current):
                    slot.thread.join()

    def _start_thread(self, slot: Slot) -> None:
        prefix = self.setup.thread_names
        name = f"{prefix}_{slot.index}" if prefix is not None else \
            f"{self.thread_name}-{slot.index}"
        slot.thread = threading.Thread(target=self.serve, args=(slot,), name=name,
                                       daemon=True)
        slot.thread.start()
