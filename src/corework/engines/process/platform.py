"""Operating-system details the process engine needs, kept in one place."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1


def is_single_threaded() -> bool:
    """True when this process has exactly one OS thread (so ``fork()`` is safe).

    Counts native threads too (BLAS pools, C extensions), not just Python's.
    """
    if threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no procfs: trust Python's count
        return True


def set_parent_death_signal() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    _libc().prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def prepare_for_forks() -> None:
    """Make each fork of this process start faster: load libc's handle once, here, and
    move every object out of the garbage collector's reach, so that a worker's
    collections do not touch (and copy) pages shared with this process."""
    _libc()
    gc.freeze()


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # the running program's symbols include libc's


def describe_exit(code: int | None) -> str:
    """'exit code 3', 'signal SIGKILL', or 'an unknown status'."""
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (and is one this user may signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process took the pid
        return False
    return True
