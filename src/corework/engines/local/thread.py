"""The thread engine: one thread per slot, in this process.

For I/O-bound work, for C code that releases the GIL (numpy), and for any work on
free-threaded CPython. Nothing is pickled: functions and arguments are passed as they are.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from ..._errors import CoreworkError
from ...transport.failure import Failure
from ..contract import ChunkReport, ChunkWork, EngineEvents, initializer_failed
from ..runner import Interrupt, run_chunk
from .interrupt import acknowledge, interrupt_thread
from .slots import Slot, SlotEngine

_STOPPED = "stopped"  # in place of the native-thread cap once the pool stops: none again
_NATIVE_POOL_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr")


def _limit_native_threads(limit: int | None) -> Any:
    """Cap the BLAS/OpenMP pools already loaded in this process while the pool runs, so
    that ``workers`` threads each calling numpy do not oversubscribe the cores."""
    if limit is None or not any(name in sys.modules for name in _NATIVE_POOL_MODULES):
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit)


class _ThreadSlot(Slot):
    def interrupt(self) -> None:
        """Raise ``Interrupt`` in the thread at its next bytecode."""
        if self.thread is not None and self.thread.ident:
            interrupt_thread(self.thread.ident, Interrupt)


class ThreadEngine(SlotEngine):
    """Slots are threads named ``corework-thread-N``, each with its own inbox."""

    thread_name = "corework-thread"

    def start(self, events: EngineEvents) -> None:
        self._native_lock = threading.Lock()
        self._native_limits = _limit_native_threads(self.setup.native_threads)
        super().start(events)

    def new_slot(self, index: int) -> Slot:
        return _ThreadSlot(index)

    def serve(self, slot: Slot) -> None:
        try:
            if self._initialize(slot.index):
                self._events.worker_ready(slot.index)
                self.serve_chunks(slot, self._run)
        except Interrupt:
            return  # kill() has already reported the loss and replaced this thread
        except BaseException as exc:  # corework's own failure: no task may wait for ever
            error = CoreworkError(f"a thread of corework's thread engine failed "
                                  f"({type(exc).__name__}: {exc}); please report this bug")
            error.__cause__ = exc
            self._events.engine_broken(error)
        finally:
            acknowledge()

    def _run(self, work: ChunkWork) -> ChunkReport:
        self._cap_native_threads()
        return run_chunk(work.id, work.fn.fn, work.kind, work.items)

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
            self._events.engine_broken(initializer_failed(
                self.setup, f"in thread {index}", Failure.capture(exc)))
            return False
        return True

    def restart(self, slot: int) -> None:
        """Threads hold no memory of their own to recycle: the slot is ready again."""
        self._events.worker_ready(slot)

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        with self._native_lock:  # stop() may come more than once
            limits, self._native_limits = self._native_limits, _STOPPED
            if limits not in (None, _STOPPED):
                limits.restore_original_limits()
        super().stop(wait, now, gently=gently)
