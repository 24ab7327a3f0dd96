"""``Process``: the lesson's ``multiprocessing.Process``, with a result and a kill switch."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._errors import Cancelled, WorkerCrashed
from .pool import Pool

__all__ = ["Process"]


class Process:
    """Runs ``target(*args, **kwargs)`` in its own worker process.

    Like ``multiprocessing.Process`` (``start``, ``join``, ``is_alive``, ``exitcode``,
    ``kill``), plus ``result()``: the target's return value, or its exception re-raised.
    The worker is forked from corework's launcher, so lambdas and closures work too.
    """

    def __init__(self, target: Callable[..., Any], args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *,
                 start_method: str | None = None) -> None:
        if not callable(target):
            raise TypeError(f"target must be callable, not {type(target).__name__}")
        self._call = (target, tuple(args), dict(kwargs or {}))
        self._start_method = start_method
        self._pool: Pool | None = None
        self._future: concurrent.futures.Future[Any] | None = None
        self._killed = False
        self._joined = False

    def start(self) -> None:
        """Start the process (at most once)."""
        if self._pool is not None:
            raise RuntimeError("a Process can only be started once")
        self._pool = Pool(1, engine="process", start_method=self._start_method,
                          native_threads=None)
        target, args, kwargs = self._call
        self._future = self._pool.submit(target, *args, **kwargs)
        self._pool.shutdown(wait=False)  # the worker exits once the target returns

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        pids = self._pool._pids() if self._pool is not None else []
        return pids[0] if pids else self._exited_pid()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the target has finished (or ``timeout`` seconds have passed)."""
        future = self._started()
        concurrent.futures.wait([future], timeout=timeout)
        if future.done() and not self._joined:
            assert self._pool is not None
            self._pool.shutdown(wait=True)  # reap the worker: nothing is left behind
            self._joined = True

    def is_alive(self) -> bool:
        """True from ``start()`` until the target has finished or the process was killed."""
        return self._future is not None and not self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        """The target's return value; re-raises its exception (with the remote traceback).

        Raises ``Cancelled`` after ``kill()``, ``WorkerCrashed`` if the process died.
        """
        value = self._started().result(timeout)
        self.join()
        return value

    def kill(self) -> None:
        """Stop the process now (SIGKILL); ``result()`` then raises ``Cancelled``."""
        self._started()
        assert self._pool is not None
        self._killed = True
        self._pool.kill()
        self._joined = True

    @property
    def exitcode(self) -> int | None:
        """None while running; 0 if the target returned, 1 if it raised (as in
        ``multiprocessing``); minus the signal number if the process was killed."""
        if self._future is None or not self._future.done():
            return None
        if self._killed:
            codes = dict(self._pool._scheduler.engine.exit_codes) if self._pool is not None else {}
            return next(iter(codes.values()), None)
        error = self._future.exception()
        if isinstance(error, WorkerCrashed):
            return error.exitcode
        if isinstance(error, Cancelled):
            return None
        return 0 if error is None else 1

    def _started(self) -> concurrent.futures.Future[Any]:
        if self._future is None:
            raise RuntimeError("the Process has not been started; call start() first")
        return self._future

    def _exited_pid(self) -> int | None:
        codes = dict(self._pool._scheduler.engine.exit_codes) if self._pool is not None else {}
        return next(iter(codes), None)

    def __repr__(self) -> str:
        state = ("initial" if self._future is None else
                 "started" if not self._future.done() else f"stopped exitcode={self.exitcode}")
        return f"<corework.Process {state}>"
