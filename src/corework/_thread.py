"""``Thread``: the lesson's ``threading.Thread``, with a result and a way to cancel it."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._errors import Cancelled
from .engines._interrupt import acknowledge, interrupt_thread

__all__ = ["Thread"]


class _Cancel(BaseException):
    """Raised inside the thread by ``cancel()``; a BaseException so ``except Exception``
    in the target does not swallow it."""


class Thread:
    """Runs ``target(*args, **kwargs)`` in a new thread of this process.

    Like ``threading.Thread`` (``start``, ``join``, ``is_alive``), plus ``result()`` and
    ``cancel()``: pure-Python code is interrupted at its next bytecode; code blocked in C
    notices when it returns to Python, but ``cancel()`` returns at once either way and
    ``result()`` then raises ``Cancelled``.
    """

    def __init__(self, target: Callable[..., Any], args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *, name: str | None = None) -> None:
        if not callable(target):
            raise TypeError(f"target must be callable, not {type(target).__name__}")
        self._call = (target, tuple(args), dict(kwargs or {}))
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        target, args, kwargs = self._call
        try:
            value = target(*args, **kwargs)
        except _Cancel:
            return
        except BaseException as exc:
            with self._lock:
                if not self._future.done():
                    self._future.set_exception(exc)
            return
        finally:
            acknowledge()
        with self._lock:
            if not self._future.done():
                self._future.set_result(value)

    def start(self) -> None:
        """Start the thread (at most once)."""
        if not self._future.set_running_or_notify_cancel():
            raise RuntimeError("the Thread was cancelled before it started")
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the target has finished (or ``timeout`` seconds have passed)."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs (a cancelled thread blocked in C runs on)."""
        return self._thread.is_alive()

    def result(self, timeout: float | None = None) -> Any:
        """The target's return value; re-raises its exception; ``Cancelled`` if cancelled."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.CancelledError as exc:
            if isinstance(exc, Cancelled):
                raise
            raise Cancelled("the thread was cancelled before it started") from None

    def cancel(self) -> bool:
        """Stop the target; True unless it had already finished."""
        with self._lock:
            if self._future.done():
                return False
            if self._future.cancel():  # not started yet
                return True
            self._future.set_exception(Cancelled("the thread was cancelled by cancel()"))
            if self._thread.ident is not None:
                interrupt_thread(self._thread.ident, _Cancel)
            return True

    def __repr__(self) -> str:
        return f"<corework.Thread {self._thread.name} alive={self.is_alive()}>"
