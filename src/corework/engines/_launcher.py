"""The launcher: one small single-threaded process per caller that starts every worker.

Why: ``fork()`` is the cheapest way to start a Python worker, but forking a process that
has threads can deadlock the child. corework never forks the caller once it has threads.
Instead, the first pool forks (or, if the caller already has threads, spawns) one
launcher; it stays single-threaded forever and forks every worker on request::

    caller ──ctrl socket (SEQPACKET, fds passed)──▶ launcher ──fork──▶ worker, worker, ...
       ▲                                              │ reaps children, reports exit codes
       └──────── one socket per worker ─────────────────────────────────────┘

Lifetimes are chained so nothing outlives the caller, even after SIGKILL: the launcher
exits (killing its workers) when the control socket reaches end-of-file, which the kernel
delivers when the caller dies; each worker has ``PR_SET_PDEATHSIG`` set to SIGKILL for
the launcher's death.

The client side (:func:`get_launcher`) is the process's one piece of shared state: a cache
of the running launcher, replaced if it dies and dropped in a forked child.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

from .._errors import CoreworkError
from . import _worker
from ._platform import is_single_threaded, prepare_for_forks, set_parent_death_signal

_ENV_FD = "COREWORK_LAUNCHER_FD"
_ENV_PATH = "COREWORK_SYS_PATH"
_MAX_MESSAGE = 65536
_KEPT_EXITS = 4096  # exit codes nobody asked for yet; old ones are dropped past this


class LauncherDied(CoreworkError):
    """The launcher process ended; a new one is started on the next request."""


# --------------------------------------------------------------------------- launcher side


def _serve(ctrl: socket.socket) -> None:
    """The launcher's loop: start workers on request, report each one's exit."""
    _reset_signal_handlers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    prepare_for_forks()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    try:
        while True:
            readable, _, _ = select.select([ctrl.fileno(), wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 4096)
                _reap(ctrl, children)
            if ctrl.fileno() in readable and not _handle_request(ctrl, children, (wake_r, wake_w)):
                return
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _reset_signal_handlers() -> None:
    """Drop the Python signal handlers a forked launcher inherited from the caller's code
    (a SIGTERM handler meant for the application must not run here, nor in workers)."""
    for number in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(number)):
                signal.signal(number, signal.SIG_DFL)


def _handle_request(ctrl: socket.socket, children: set[int], own_fds: tuple[int, int]) -> bool:
    """Serve one request; False when the caller is gone."""
    try:
        data, fds, _, _ = socket.recv_fds(ctrl, _MAX_MESSAGE, 1)
    except ConnectionResetError:
        return False
    if not data:
        return False
    request = pickle.loads(data)
    if request[0] == "start":
        _, request_id, mode = request
        try:
            pid = _start_worker(fds[0], mode, ctrl, own_fds)
            children.add(pid)
            _send(ctrl, ("started", request_id, pid))
        except OSError as exc:
            _send(ctrl, ("failed", request_id, str(exc)))
        finally:
            for fd in fds:
                os.close(fd)
    elif request[0] == "kill" and request[1] in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(request[1], request[2])
    return True


def _start_worker(fd: int, mode: str, ctrl: socket.socket, own_fds: tuple[int, int]) -> int:
    launcher_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the new worker: drop the launcher's machinery, then serve or exec
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctrl.close()
        for own in own_fds:
            os.close(own)
        set_parent_death_signal()
        if os.getppid() != launcher_pid:  # the launcher died before we could watch it
            os._exit(1)
        if mode == "spawn":
            _exec_worker(fd)
        code = _worker.serve_fd(fd)
    finally:
        _worker.finish_process()
        os._exit(code)


def _exec_worker(fd: int) -> None:
    os.set_inheritable(fd, True)
    env = dict(os.environ, **{_ENV_PATH: json.dumps(sys.path)})
    argv = [sys.executable, "-c", "from corework.engines._worker import main; main()", str(fd)]
    os.execve(sys.executable, argv, env)


def _reap(ctrl: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(ctrl, ("exited", pid, os.waitstatus_to_exitcode(status)))


def _send(ctrl: socket.socket, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError):  # the caller is gone: the next recv says so
        ctrl.send(pickle.dumps(message))


def main() -> None:
    """Entry point of a spawned launcher (see ``_spawn_launcher``)."""
    sys.path[:] = json.loads(os.environ.pop(_ENV_PATH, "[]")) or sys.path
    fd = int(os.environ.pop(_ENV_FD))
    _serve(socket.socket(fileno=fd))


# ----------------------------------------------------------------------------- caller side


class LauncherClient:
    """The caller's handle on its launcher. Thread-safe; every call is one short exchange."""

    def __init__(self, ctrl: socket.socket, pid: int, popen: subprocess.Popen[bytes] | None):
        self.pid = pid
        self._ctrl = ctrl
        self._popen = popen
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._next_id = 0
        self._started: dict[int, int | str] = {}
        self._exits: OrderedDict[int, int] = OrderedDict()
        self.alive = True

    def start_workers(self, socks: list[socket.socket], mode: str,
                      timeout: float = 60.0) -> list[int]:
        """Have the launcher start one worker per socket; returns their pids.

        The requests go out together, so the launcher forks them back to back.
        """
        with self._lock:
            request_ids = list(range(self._next_id + 1, self._next_id + 1 + len(socks)))
            self._next_id += len(socks)
            try:
                for request_id, sock in zip(request_ids, socks, strict=True):
                    socket.send_fds(self._ctrl, [pickle.dumps(("start", request_id, mode))],
                                    [sock.fileno()])
            except OSError as exc:
                self.alive = False
                raise LauncherDied(f"the worker launcher is gone: {exc}") from exc
            self._read_until(lambda: all(r in self._started for r in request_ids), timeout)
            outcomes = [self._started.pop(request_id) for request_id in request_ids]
        for outcome in outcomes:
            if isinstance(outcome, str):
                raise CoreworkError(f"could not start a worker process: {outcome}")
        return outcomes  # type: ignore[return-value]

    def kill(self, pid: int, signum: int = signal.SIGKILL) -> None:
        """Send a worker ``signum`` (SIGKILL), if it is still the launcher's child (so
        never a stranger)."""
        with self._lock, contextlib.suppress(OSError):
            self._ctrl.send(pickle.dumps(("kill", pid, int(signum))))

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        """The exit code of worker ``pid`` (negative: killed by that signal), or None."""
        with self._lock:
            if pid not in self._exits and not self.alive:
                return None  # a launcher known to be gone reports nothing more
            try:
                self._read_until(lambda: pid in self._exits, timeout)
            except (TimeoutError, LauncherDied):
                return None
            return self._exits.pop(pid)

    def _read_until(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the worker launcher did not answer in time")
            try:
                self._ctrl.settimeout(remaining)
                data = self._ctrl.recv(_MAX_MESSAGE)
            except TimeoutError:
                continue
            except OSError:  # closed: the launcher, or this process, is going away
                data = b""
            if not data:
                self.alive = False
                raise LauncherDied("the worker launcher exited")
            self._record(pickle.loads(data))

    def _record(self, message: tuple[Any, ...]) -> None:
        if message[0] == "exited":
            self._exits[message[1]] = message[2]
            while len(self._exits) > _KEPT_EXITS:
                self._exits.popitem(last=False)
        else:  # "started" or "failed"
            self._started[message[1]] = message[2]

    def running(self) -> bool:
        """Whether the launcher process is still there (a cheap check, no exchange)."""
        if not self.alive or os.getpid() != self._owner:
            return False
        if self._popen is not None:
            self.alive = self._popen.poll() is None
        else:
            try:
                self.alive = os.waitpid(self.pid, os.WNOHANG) == (0, 0)
            except ChildProcessError:  # reaped by someone else's os.wait(), or not ours
                self.alive = _exists(self.pid)
        return self.alive

    def close(self) -> None:
        """End the launcher (it kills any worker still running) and reap it."""
        self.alive = False
        with contextlib.suppress(OSError):
            self._ctrl.close()
        if os.getpid() != self._owner:
            return
        if self._popen is not None:
            self._popen.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)  # already reaped if running() saw it gone


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process took the pid
        return False
    return True


_client: LauncherClient | None = None
_client_lock = threading.Lock()


def get_launcher() -> LauncherClient:
    """The running launcher, started on first use (forked if this process has no threads)
    and again whenever the last one has died (killed, or out of memory)."""
    global _client
    with _client_lock:
        if _client is None or not _client.running():
            if _client is not None:
                _client.close()
            _client = _fork_launcher() if is_single_threaded() else _spawn_launcher()
        return _client


def _fork_launcher() -> LauncherClient:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _worker.flush_std_streams()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            _serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return LauncherClient(ours, pid, None)


def _spawn_launcher() -> LauncherClient:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ, **{_ENV_FD: str(theirs.fileno()), _ENV_PATH: json.dumps(sys.path)})
    popen = subprocess.Popen(
        [sys.executable, "-c", "from corework.engines._launcher import main; main()"],
        pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return LauncherClient(ours, popen.pid, popen)


def _drop_in_child() -> None:
    """A forked child must not share its parent's launcher; it starts its own if needed."""
    global _client, _client_lock
    if _client is not None:
        with contextlib.suppress(OSError):
            _client._ctrl.close()
    _client = None
    _client_lock = threading.Lock()


def _close_at_exit() -> None:
    global _client
    if _client is not None:
        _client.close()
        _client = None


os.register_at_fork(after_in_child=_drop_in_child)
atexit.register(_close_at_exit)
