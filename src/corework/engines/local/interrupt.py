"""Raising an exception inside another thread, at its next Python bytecode — and again if
it was lost.

``PyThreadState_SetAsyncExc`` makes the exception fire at the thread's next check of its
eval breaker. Since 3.12 a pending garbage collection runs at that same check, so the
exception may go off inside a GC or weakref callback, where CPython reports it as
"unraisable" and drops it: the thread would run on. A chained ``sys.unraisablehook``
(it runs in that very thread) sees such a drop and has the exception scheduled again —
from a short-lived thread, a millisecond later: scheduled from the hook itself, it would
go off inside the hook — until the thread says it got it (:func:`acknowledge`).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from typing import Any

#: How long after a drop the exception is scheduled again (the hook has returned by then).
RESCHEDULE_SECONDS = 0.001

_targets: dict[int, type[BaseException]] = {}  # thread ident -> what it must raise
#: Held while scheduling, so that a reschedule never slips in after an acknowledge. Reentrant:
#: a garbage collection may run inside ``_schedule`` (ctypes objects are tracked), and a
#: callback of it that raises reports through ``_unraisable`` in this same thread.
_lock = threading.RLock()
_previous_hook: Any = None


def interrupt_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` in thread ``ident``; False if no such thread exists.

    A thread blocked in C code (a long ``sleep``, a socket read) only sees it when it
    returns to Python. The thread calls :func:`acknowledge` once it has caught it.
    """
    _install_hook()
    with _lock:
        _targets[ident] = exc_type
    return _schedule(ident, exc_type)


def acknowledge() -> None:
    """The calling thread caught its interrupt, or ends: nothing more to schedule."""
    ident = threading.get_ident()
    with _lock:  # held while scheduling: _reschedule cannot slip one in after this
        if _targets.pop(ident, None) is not None:
            _schedule(ident, None)  # one scheduled again meanwhile must not fire later


def _schedule(ident: int, exc_type: type[BaseException] | None) -> bool:
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type is not None else None
    )
    return bool(done)


def _install_hook() -> None:
    """Chain the hook in front of whatever hook is set now (unless it is there already)."""
    global _previous_hook
    with _lock:
        if sys.unraisablehook is not _unraisable:
            _previous_hook = sys.unraisablehook
            sys.unraisablehook = _unraisable


def _unraisable(unraisable: Any) -> None:
    ident = threading.get_ident()
    wanted = _targets.get(ident)  # one dict read: takes no lock
    kind = unraisable.exc_type
    if wanted is not None and isinstance(kind, type) and issubclass(kind, wanted):
        _later(_reschedule, ident, wanted)
        return
    _previous_hook(unraisable)


def _later(fn: Any, *args: Any) -> None:
    """``fn(*args)`` from a short-lived thread in RESCHEDULE_SECONDS: a daemon, except in
    an isolated sub-interpreter, which allows none."""
    again = threading.Timer(RESCHEDULE_SECONDS, fn, args)
    with contextlib.suppress(RuntimeError):  # "daemon threads are disabled" there
        again.daemon = True
    again.start()


def _reschedule(ident: int, exc_type: type[BaseException]) -> None:
    with _lock:
        if _targets.get(ident) is exc_type:  # else it got one meanwhile, or has ended
            _schedule(ident, exc_type)
