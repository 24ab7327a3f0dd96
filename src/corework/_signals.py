"""Signals are the main thread's: corework's own threads block them.

A process-directed signal (Ctrl-C's SIGINT, a SIGTERM) goes to any thread that does not
block it. Python runs its handlers in the main thread only, and on a free-threaded
CPython (seen on 3.13t) a signal taken by a thread that sits in ``poll()`` may not reach
the main thread at all: ``corework run`` ignored Ctrl-C about one time in eight. So the
threads corework starts for itself (the process engine's reader, the scheduler's timer,
Dask's results thread, the progress line) block these signals; threads that run the
user's tasks do not (a program a task starts would inherit the blocked mask), and the
launcher unblocks them in itself (it may be forked, or spawned, from such a thread).
"""

from __future__ import annotations

import signal

__all__ = ["block_in_this_thread", "unblock_in_this_thread"]

_ASYNC = tuple(getattr(signal, name) for name in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGWINCH",
    "SIGCHLD") if hasattr(signal, name))


def block_in_this_thread() -> None:
    """Leave asynchronous signals to other threads (the main thread) from now on."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC)


def unblock_in_this_thread() -> None:
    """Take asynchronous signals again (a process started from a thread that blocked
    them inherits that mask)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _ASYNC)
