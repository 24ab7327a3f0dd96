"""``Process``: the lesson's ``multiprocessing.Process``, with a result and a kill switch."""

from __future__ import annotations

import concurrent.futures
import itertools
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._errors import Cancelled, RemoteTraceback, WorkerCrashed
from .pool import Pool, stop_now

__all__ = ["Process"]

_numbers = itertools.count(1)
_daemons: weakref.WeakSet[Process] = weakref.WeakSet()  # started daemons, not yet joined


class Process:
    """Runs ``target(*args, **kwargs)`` in its own worker process.

    Like ``multiprocessing.Process`` (``start``, ``join``, ``is_alive``, ``exitcode``,
    ``pid``, ``name``, ``daemon``, ``terminate``, ``kill``), plus ``result()``: the
    target's return value, or its exception re-raised. An exception the target raises is
    printed to stderr as ``multiprocessing`` prints it ("Process Process-1:" and the
    traceback, from the target's frame on). The program waits for a process at exit
    unless it is a ``daemon``: that one is killed. The worker is forked from corework's
    launcher, so lambdas and closures work too.
    """

    def __init__(self, target: Callable[..., Any], args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *, name: str | None = None,
                 daemon: bool = False, start_method: str | None = None) -> None:
        if not callable(target):
            raise TypeError(f"target must be callable, not {type(target).__name__}")
        self._call = (target, tuple(args), dict(kwargs or {}))
        self.name = name if name is not None else f"Process-{next(_numbers)}"
        self.daemon = daemon
        self._start_method = start_method
        self._pool: Pool | None = None
        self._future: concurrent.futures.Future[Any] | None = None
        self._reported = threading.Event()
        self._stopped = False
        self._joined = False

    def start(self) -> None:
        """Start the process (at most once)."""
        if self._pool is not None:
            raise RuntimeError("a Process can only be started once")
        self._pool = Pool(1, engine="process", start_method=self._start_method,
                          native_threads=None)
        target, args, kwargs = self._call
        self._future = self._pool.submit(target, *args, **kwargs)
        self._future.add_done_callback(self._report)
        if self.daemon:
            _daemons.add(self)
        self._pool.shutdown(wait=False)  # the worker exits once the target returns

    def _report(self, future: concurrent.futures.Future[Any]) -> None:
        """Print the target's exception as ``multiprocessing`` does in the child."""
        try:
            error = None if future.cancelled() else future.exception()
            if error is not None and not isinstance(error, (Cancelled, WorkerCrashed)):
                cause = error.__cause__
                tb = cause.tb if isinstance(cause, RemoteTraceback) else f"{error!r}\n"
                sys.stderr.write(f"Process {self.name}:\n{tb}")
                sys.stderr.flush()
        finally:
            self._reported.set()

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
            self._reported.wait()
            self._joined = True
            _daemons.discard(self)

    def is_alive(self) -> bool:
        """True from ``start()`` until the target has finished or the process was stopped."""
        return self._future is not None and not self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        """The target's return value; re-raises its exception (with the remote traceback).

        Raises ``Cancelled`` after ``kill()`` or ``terminate()`` (saying which),
        ``WorkerCrashed`` if the process died.
        """
        future = self._started()
        concurrent.futures.wait([future], timeout=timeout)
        if future.done():
            self.join()
        return future.result(0)

    def kill(self) -> None:
        """Stop the process now (SIGKILL); ``result()`` then raises ``Cancelled``."""
        self._stop("the process was killed by Process.kill() (SIGKILL)", gently=False)

    def terminate(self) -> None:
        """Stop the process with SIGTERM (a handler of the target's own may clean up);
        ``result()`` then raises ``Cancelled``."""
        self._stop("the process was terminated by Process.terminate() (SIGTERM)",
                   gently=True)

    def _stop(self, reason: str, *, gently: bool) -> None:
        self._started()
        assert self._pool is not None
        self._stopped = True
        stop_now(self._pool, reason, gently=gently)
        self._joined = True
        _daemons.discard(self)

    @property
    def exitcode(self) -> int | None:
        """None while running; 0 if the target returned, 1 if it raised (as in
        ``multiprocessing``); minus the signal number if the process was stopped."""
        if self._future is None or not self._future.done():
            return None
        if self._stopped:
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
        return f"<corework.Process name={self.name!r} {state}>"


def _kill_daemons() -> None:
    """At exit, as ``multiprocessing`` does: daemon processes are killed, not waited for
    (this runs before the pools still running are waited for)."""
    for process in list(_daemons):
        if process.is_alive():
            process.kill()


threading._register_atexit(_kill_daemons)  # type: ignore[attr-defined]
