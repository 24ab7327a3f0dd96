"""The thread engine: one thread per slot, in this process.

For I/O-bound work, for C code that releases the GIL (numpy), and for any work on
free-threaded CPython. Nothing is pickled: functions and arguments are passed as they are.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

from .._errors import Cancelled, CoreworkError, InitializerFailed
from .._transport import Failure
from ._base import ChunkWork, Engine, EngineEvents
from ._interrupt import acknowledge, interrupt_thread
from ._runner import Interrupt, run_chunk

_STOP = None
_STOPPED = "stopped"  # in place of the native-thread cap once the pool stops: none again
_NATIVE_POOL_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr")


def _limit_native_threads(limit: int | None) -> Any:
    """Cap the BLAS/OpenMP pools already loaded in this process while the pool runs, so
    that ``workers`` threads each calling numpy do not oversubscribe the cores."""
    if limit is None or not any(name in sys.modules for name in _NATIVE_POOL_MODULES):
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit)


def _checkpoint() -> None:
    """A Python-level call: lets a pending ``Interrupt`` fire here, inside our ``try``."""


class _Slot:
    """One thread's inbox and the chunk it is running (guarded by ``lock``)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.inbox: queue.SimpleQueue[ChunkWork | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.running: int | None = None  # id of the chunk being run
        self.retired = False  # set by kill(): this thread no longer owns the slot
        self.thread: threading.Thread | None = None


class ThreadEngine(Engine):
    """Slots are threads named ``corework-thread-N``, each with its own inbox."""


    def start(self, events: EngineEvents) -> None:
        self._events = events
        self._native_lock = threading.Lock()
        self._native_limits = _limit_native_threads(self.setup.native_threads)
        self._slots = [_Slot(index) for index in range(self.workers)]
        for slot in self._slots:  # only now: a thread may call stop() at once
            self._start_thread(slot)

    def _start_thread(self, slot: _Slot) -> None:
        slot.thread = threading.Thread(
            target=self._serve, args=(slot,), name=f"corework-thread-{slot.index}", daemon=True
        )
        slot.thread.start()

    def _serve(self, slot: _Slot) -> None:
        try:
            self._serve_slot(slot)
        except Interrupt:
            return  # kill() has already reported the loss and replaced this thread
        except BaseException as exc:  # corework's own failure: no task may wait for ever
            error = CoreworkError(f"a thread of corework's thread engine failed "
                                  f"({type(exc).__name__}: {exc}); please report this bug")
            error.__cause__ = exc
            self._events.engine_broken(error)
        finally:
            acknowledge()

    def _serve_slot(self, slot: _Slot) -> None:
        if not self._initialize(slot.index):
            return
        self._events.worker_ready(slot.index)
        while self._run_next(slot):
            pass

    def _run_next(self, slot: _Slot) -> bool:
        """Run the slot's next chunk; False when the slot is done. Nothing of the chunk
        outlives this call (a thread waiting for work holds no task's data)."""
        work = slot.inbox.get()
        if work is _STOP:
            return False
        self._cap_native_threads()
        with slot.lock:
            slot.running = work.id
        report = run_chunk(work.id, work.fn.fn, work.kind, work.items)
        with slot.lock:
            slot.running = None
        _checkpoint()
        if slot.retired:
            return False
        self._events.chunk_done(slot.index, report)
        return True

    def _cap_native_threads(self) -> None:
        """Cap BLAS/OpenMP pools that tasks loaded since the start (numpy imported inside
        a task), once: a dict lookup per chunk until then. Under the lock that stop()
        takes, so a cap set here is never left behind by a pool that stopped."""
        if self._native_limits is not None or self.setup.native_threads is None:
            return
        with self._native_lock:
            if self._native_limits is None:
                self._native_limits = _limit_native_threads(self.setup.native_threads)

    def _initialize(self, index: int) -> bool:
        if self.setup.initializer is None:
            return True
        try:
            self.setup.initializer(*self.setup.initargs)
        except Interrupt:
            raise
        except BaseException as exc:
            failure = Failure.capture(exc)
            error = InitializerFailed(
                f"the initializer {self.setup.initializer!r} raised in thread {index}: "
                f"{failure.type_name}: {failure.message}"
            )
            error.__cause__ = exc
            self._events.engine_broken(error)
            return False
        return True

    def send(self, slot: int, work: ChunkWork) -> None:
        target = self._slots[slot]
        with target.lock:  # running from now: kill() and stop(now=True) must see it
            target.running = work.id
        target.inbox.put(work)

    def kill(self, slot: int) -> None:
        """Interrupt the slot's thread at its next bytecode and give the slot a new thread.

        A thread blocked in C code only notices when it returns to Python; it is abandoned
        (it exits on its own then) and the new thread takes the slot at once.
        """
        old = self._slots[slot]
        with old.lock:
            old.retired = True
            if old.running is not None and old.thread is not None and old.thread.ident:
                interrupt_thread(old.thread.ident, Interrupt)
        old.inbox.put(_STOP)
        self._events.worker_lost(slot, Cancelled("the task was interrupted by kill()"))
        self._slots[slot] = _Slot(slot)
        self._start_thread(self._slots[slot])

    def restart(self, slot: int) -> None:
        """Threads hold no memory of their own to recycle: the slot is ready again."""
        self._events.worker_ready(slot)

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        with self._native_lock:  # stop() may come more than once
            limits, self._native_limits = self._native_limits, _STOPPED
            if limits not in (None, _STOPPED):
                limits.restore_original_limits()
        abandoned = set()
        for slot in self._slots:
            if now:
                with slot.lock:
                    slot.retired = True
                    if slot.running is not None and slot.thread and slot.thread.ident:
                        interrupt_thread(slot.thread.ident, Interrupt)
                        abandoned.add(slot.index)
            slot.inbox.put(_STOP)
        if wait:
            current = threading.current_thread()
            for slot in self._slots:
                if slot.index not in abandoned and slot.thread not in (None, current):
                    slot.thread.join()
