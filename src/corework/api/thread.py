"""``Thread``: the lesson's ``threading.Thread``, with a result and a way to stop it."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._errors import Cancelled
from ..engines.local.interrupt import acknowledge, interrupt_thread

__all__ = ["Thread"]


class _Cancel(BaseException):
    """Raised inside the thread by ``cancel()``, ``terminate()`` and ``kill()``; a
    BaseException so ``except Exception`` in the target does not swallow it."""


class _Runner(threading.Thread):
    """The thread itself: named as ``threading`` names one (``Thread-3 (target)``)."""

    def __init__(self, owner: Thread, target: Callable[..., Any], name: str | None,
                 daemon: bool | None) -> None:
        super().__init__(target=target, name=name, daemon=daemon)
        self._owner = owner

    def run(self) -> None:
        self._owner._run()


class Thread:
    """Runs ``target(*args, **kwargs)`` in a new thread of this process.

    Like ``threading.Thread`` (``start``, ``join``, ``is_alive``, ``name``, ``daemon``,
    ``ident``), plus ``result()`` and ways to stop it. An exception the target raises is
    reported as ``threading`` reports it — ``threading.excepthook``, by default
    "Exception in thread NAME:" and the traceback on stderr — and ``result()`` re-raises
    it. ``daemon`` is as in ``threading`` (by default inherited from the creating thread:
    the program waits for a non-daemon thread at exit).

    ``cancel()``, ``terminate()`` and ``kill()`` all raise an exception inside the thread:
    pure-Python code is interrupted at its next bytecode (its ``finally`` blocks and
    ``with`` exits run); code blocked in C notices when it returns to Python. A thread
    cannot be stopped harder than that, so the three differ only in what ``result()``
    then says (``Cancelled``: cancelled, terminated or killed); each returns at once.
    """

    def __init__(self, target: Callable[..., Any], args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *, name: str | None = None,
                 daemon: bool | None = None) -> None:
        if not callable(target):
            raise TypeError(f"target must be callable, not {type(target).__name__}")
        self._call = (target, tuple(args), dict(kwargs or {}))
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._thread = _Runner(self, target, name, daemon)

    @property
    def name(self) -> str:
        return self._thread.name

    @property
    def daemon(self) -> bool:
        return self._thread.daemon

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _run(self) -> None:
        target, args, kwargs = self._call
        try:
            value = target(*args, **kwargs)
        except _Cancel:
            return
        except BaseException as exc:
            with self._lock:  # reported before result() can raise it
                if not self._future.done():
                    self._report(exc)
                    self._future.set_exception(exc)
            return
        finally:
            acknowledge()
        with self._lock:
            if not self._future.done():
                self._future.set_result(value)

    def _report(self, exc: BaseException) -> None:
        """As ``threading`` does for an uncaught exception, from the target's frame on."""
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        threading.excepthook(threading.ExceptHookArgs(
            (type(exc), exc.with_traceback(tb), tb, self._thread)))

    def start(self) -> None:
        """Start the thread (at most once)."""
        if not self._future.set_running_or_notify_cancel():
            raise RuntimeError("the Thread was cancelled before it started")
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the target has finished (or ``timeout`` seconds have passed)."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs (a stopped thread blocked in C runs on)."""
        return self._thread.is_alive()

    def result(self, timeout: float | None = None) -> Any:
        """The target's return value; re-raises its exception; ``Cancelled`` if it was
        stopped (the message says how)."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.CancelledError as exc:
            if isinstance(exc, Cancelled):
                raise
            raise Cancelled("the thread was cancelled before it started") from None

    def cancel(self) -> bool:
        """Stop the target; True unless it had already finished."""
        return self._stop("the thread was cancelled by cancel()")

    def terminate(self) -> bool:
        """Stop the target as ``cancel()`` does (threads take no signals; this is as
        gentle as ``SIGTERM`` is for a process: ``finally`` blocks run)."""
        return self._stop("the thread was terminated by Thread.terminate()")

    def kill(self) -> bool:
        """Stop the target as ``cancel()`` does: no harder way to stop a thread exists."""
        return self._stop("the thread was killed by Thread.kill()")

    def _stop(self, reason: str) -> bool:
        with self._lock:
            if self._future.done():
                return False
            if self._future.cancel():  # not started yet
                return True
            self._future.set_exception(Cancelled(reason))
            if self._thread.ident is not None:
                interrupt_thread(self._thread.ident, _Cancel)
            return True

    def __repr__(self) -> str:
        return f"<corework.Thread {self._thread.name} alive={self.is_alive()}>"
