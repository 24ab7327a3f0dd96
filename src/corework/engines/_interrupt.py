"""Raising an exception inside another thread, at its next Python bytecode."""

from __future__ import annotations

import ctypes


def interrupt_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` in thread ``ident``; False if no such thread exists.

    A thread blocked in C code (a long ``sleep``, a socket read) only sees it when it
    returns to Python.
    """
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc_type)
    )
    return bool(done)
