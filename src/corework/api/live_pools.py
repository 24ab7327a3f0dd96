"""The pools of this process that the end of the program finishes, as concurrent.futures
does its executors' — those dropped without ``shutdown()`` too — and what a pool and its
``options()`` views share, so that the last of them to go lets the pool stop."""

from __future__ import annotations

import os
import sys
import threading
import weakref

from ..scheduling.scheduler import Scheduler

__all__ = ["Handle", "exiting", "forget", "remember"]

#: Schedulers of pools not yet shut down (with wait): the end of the program waits for
#: their work, as concurrent.futures does — also for pools dropped without shutdown().
_live: set[Scheduler] = set()
_live_lock = threading.Lock()


class Handle:
    """What a pool and its :meth:`Pool.options` views share: when the last of them is
    gone, no more work can come, so the pool finishes what it has and stops (a pool
    dropped without ``shutdown()`` never keeps the program from exiting)."""

    def __init__(self, scheduler: Scheduler) -> None:
        weakref.finalize(self, scheduler.shutdown, wait=False).atexit = False


def remember(scheduler: Scheduler) -> None:
    """A new pool's: the end of the program finishes its work unless it was shut down."""
    with _live_lock:
        _live.add(scheduler)


def forget(scheduler: Scheduler) -> None:
    """The pool was shut down, or stopped: nothing is left for the end to finish."""
    with _live_lock:
        _live.discard(scheduler)


_exiting = threading.Event()


def exiting() -> bool:
    """Whether the end of the program has begun shutting pools down."""
    return _exiting.is_set()


def _shutdown_live_pools() -> None:
    """At the end of the program, finish every pool's work, as concurrent.futures does;
    but after Ctrl-C ended it (the uncaught KeyboardInterrupt the interpreter keeps in
    ``sys.last_value``), stop it instead, as leaving a ``with`` block does then."""
    _exiting.set()
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    with _live_lock:
        schedulers = list(_live)
    for scheduler in schedulers:
        if interrupted:
            scheduler.terminate("cancelled: the program was interrupted (Ctrl-C)")
        else:
            scheduler.shutdown(wait=True)
        forget(scheduler)


def _forget_live_pools() -> None:
    """In a forked child: the parent's pools are not this process's to finish."""
    global _live_lock
    _live.clear()
    _live_lock = threading.Lock()


# Like concurrent.futures: finish pools when the main thread ends, before ``atexit``
# handlers run (the process launcher's own exit handler must come after this).
threading._register_atexit(_shutdown_live_pools)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_live_pools)
