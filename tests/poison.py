"""Poison objects: data that misbehaves at one stage of a task's trip, in one way.

A task's data passes through five stages: its arguments are pickled in the caller and
unpickled in the worker, the task runs, and its result is pickled in the worker and
unpickled in the caller. :class:`AtPickle` acts when it is pickled, :class:`AtUnpickle`
when it is unpickled; :func:`task` runs an action itself or returns such an object.
Importable by name, so workers of every kind (and Dask's) can load them.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ACTIONS = ("raise", "systemexit", "keyboardinterrupt", "segfault", "exit", "hang")
STAGES = ("pickle-argument", "unpickle-argument", "run", "pickle-result", "unpickle-result")
#: The exit code of the "exit" action, so a test can tell it from any other.
EXIT_CODE = 7


class Poisoned(ValueError):
    """What the "raise" action raises."""


def act(action: str) -> None:
    """Misbehave as ``action`` says, here and now."""
    if action == "raise":
        raise Poisoned("poisoned")
    if action == "systemexit":
        sys.exit(0)
    if action == "keyboardinterrupt":
        raise KeyboardInterrupt
    if action == "segfault":
        import faulthandler

        faulthandler._sigsegv()
    if action == "exit":
        os._exit(EXIT_CODE)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "hang":
        while True:  # in Python, with sleeps: a thread can be interrupted, cheaply
            time.sleep(0.01)


def _unpickled(action: str) -> None:
    act(action)


class AtPickle:
    """Acts when pickled (in the caller as an argument, in the worker as a result)."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self):
        act(self.action)
        return (AtPickle, (self.action,))


class AtUnpickle:
    """Acts when unpickled (in the worker as an argument, in the caller as a result)."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self):
        return (_unpickled, (self.action,))


def task(argument: object) -> object:
    """A task: plain values come back; ("run", action) acts here; ("return-pickle",
    action) and ("return-unpickle", action) return a poison for the result's trip."""
    if isinstance(argument, tuple) and len(argument) == 2:
        kind, action = argument
        if kind == "run":
            act(action)
        if kind == "return-pickle":
            return AtPickle(action)
        if kind == "return-unpickle":
            return AtUnpickle(action)
    return argument


def poison_for(stage: str, action: str) -> object:
    """The argument of :func:`task` that misbehaves at ``stage`` as ``action``."""
    return {"pickle-argument": AtPickle, "unpickle-argument": AtUnpickle}.get(
        stage, lambda a: (_TASK_KINDS[stage], a))(action)


_TASK_KINDS = {"run": "run", "pickle-result": "return-pickle",
               "unpickle-result": "return-unpickle"}
