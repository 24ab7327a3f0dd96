"""The launcher: one small single-threaded process per caller that starts every worker.

Why: ``fork()`` is the cheapest way to start a Python worker, but forking a process that
has threads can deadlock the child. corework never forks the caller once it has threads,
unless a pool asks for what only that gives (``start_method="fork-caller"``, or initargs
holding a fork-context lock: the pool then gets a launcher of its own, forked then, as
multiprocessing's fork would). Instead, the first pool forks (or, if the caller already
has threads, spawns) one launcher; it stays single-threaded and forks every worker on
request::

    caller ──ctrl socket (SEQPACKET, fds passed)──▶ launcher ──fork──▶ worker, worker, ...
       ▲                                              │ reaps children, reports exit codes
       └──────── one socket per worker ─────────────────────────────────────┘

Workers are born from the caller's present, not from the launcher's past: each start
request carries what changed in the caller's environment, working directory, ``sys.path``
and umask (``present``), and the libraries the caller imported since (``warmup``), which
the launcher imports too, so workers start warm. The launcher holds none of the caller's
file descriptors, and nothing outlives the caller, even after SIGKILL: the launcher
watches the caller's pid and exits (killing its workers) when it ends; each worker has
``PR_SET_PDEATHSIG`` set to SIGKILL for the launcher's death. The launcher's own loop is
``launcher_loop``.

This module is the caller's client of one launcher; which launcher a pool uses (the
process's one, or one of the pool's own) is ``launchers``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import signal
import socket
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..._errors import CoreworkError
from . import present as _present
from .launcher_loop import MAX_MESSAGE
from .platform import pid_exists
from .warmup import Imports

if TYPE_CHECKING:
    import subprocess

_KEPT_EXITS = 4096  # exit codes nobody asked for yet; old ones are dropped past this
_NAMES_PER_MESSAGE = 1000  # module names in one "warm" request
_EXIT_SECONDS = 2.0  # how long a launcher told to exit may take before it is killed


class LauncherDied(CoreworkError):
    """The launcher process ended; a new one is started on the next request."""


# ----------------------------------------------------------------------------- caller side


class LauncherClient:
    """The caller's handle on its launcher. Thread-safe; every call is one short exchange."""

    def __init__(self, ctrl: socket.socket, pid: int, popen: subprocess.Popen[bytes] | None,
                 present: _present.Changes, imports: Imports) -> None:
        self.pid = pid
        self._ctrl = ctrl
        self._popen = popen
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._next_id = 0
        self._started: dict[int, int | str] = {}
        self._exits: OrderedDict[int, int] = OrderedDict()
        self._present = present  # what the launcher sees of this process
        self._imports = imports
        self._warm_sent = 0  # "warm" requests sent, and answered ("warmed")
        self._warm_answered = 0
        #: Why the launcher forks no more (a module whose import gave it a thread or did
        #: not finish, or that it stopped answering): new pools get a new launcher (see
        #: get_launcher); this one serves its workers until the end.
        self.tainted_by: str | None = None
        self.alive = True
        self._closed = False
        self._close_lock = threading.Lock()

    def start_workers(self, socks: list[socket.socket], mode: str, timeout: float = 60.0,
                      *, warm: bool = False) -> list[int]:
        """Have the launcher start one worker per socket, in this process's present;
        returns their pids.

        The requests go out together, so the launcher forks them back to back. With
        ``warm``, the launcher first imports the modules it was told of before (not those
        named after these requests: a first pool never waits for its caller's imports).
        """
        with self._lock:
            request_ids = list(range(self._next_id + 1, self._next_id + 1 + len(socks)))
            self._next_id += len(socks)
            try:
                self._send_present()
                for request_id, sock in zip(request_ids, socks, strict=True):
                    socket.send_fds(self._ctrl, [pickle.dumps(("start", request_id, mode, warm))],
                                    [sock.fileno()])
                self._send_imports()
            except OSError as exc:
                self.alive = False
                raise LauncherDied(f"the worker launcher is gone: {exc}") from exc
            self._read_until(lambda: all(r in self._started for r in request_ids), timeout)
            outcomes = [self._started.pop(request_id) for request_id in request_ids]
        for outcome in outcomes:
            if isinstance(outcome, str):
                raise CoreworkError(f"could not start a worker process: {outcome}")
        return outcomes  # type: ignore[return-value]

    def _send_present(self) -> None:
        now = _present.capture()
        for change in _present.changes(self._present, now):
            try:
                self._ctrl.send(pickle.dumps(("present", change)))
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                # too big for one message (a sys.path of thousands of entries): the
                # workers keep what the launcher had; the launcher itself is fine
        self._present = now

    def _send_imports(self) -> None:
        names = self._imports.new()
        for start in range(0, len(names), _NAMES_PER_MESSAGE):
            self._ctrl.send(pickle.dumps(("warm", names[start:start + _NAMES_PER_MESSAGE])))
            self._warm_sent += 1

    def wait_warm(self, timeout: float) -> bool:
        """Wait until the launcher has imported what it was told to; whether it has."""
        with self._lock:
            try:
                self._read_until(lambda: self._warm_answered >= self._warm_sent, timeout)
            except (TimeoutError, LauncherDied):
                return False
            return True

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
                data = self._ctrl.recv(MAX_MESSAGE)
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
        elif message[0] == "warmed":
            self._warmed(*message[1:])
        else:  # "started" or "failed"
            self._started[message[1]] = message[2]

    def _warmed(self, requests: int, imported: int, skipped: list[str],
                tainted_by: str | None) -> None:
        import logging  # here: a first result does not wait for logging's import

        logger = logging.getLogger("corework")
        self._warm_answered = requests
        for reason in skipped:
            logger.debug("the worker launcher could not import %s", reason)
        if tainted_by is not None and self.tainted_by is None:
            self.tainted_by = tainted_by
            Imports.never(tainted_by)
            logger.debug("importing %s started a thread in the worker launcher, or did not "
                         "finish: it executes workers afresh from now on, and a new "
                         "launcher leaves that module out", tainted_by)
        logger.debug("the worker launcher imported %d modules", imported)

    def retire(self, why: str) -> None:
        """Start no more workers here (it did not answer in time): the next pool gets a
        new launcher; this one serves the workers it has until the end."""
        self.tainted_by = self.tainted_by or why

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
                self.alive = pid_exists(self.pid)
        return self.alive

    def close(self) -> None:
        """End the launcher (it kills any worker still running) and reap it. Told, not
        just hung up on: a child this process forked may hold the socket too. Once: the
        second call (a pool's finalizer after its stop) has nothing left to do."""
        with self._close_lock:  # not _lock: a start may hold that, waiting for an answer
            if self._closed:
                return
            self._closed = True
        self.alive = False
        owner = os.getpid() == self._owner
        with contextlib.suppress(OSError):
            self._ctrl.send(pickle.dumps(("exit",)))
            if owner:
                self._wait_hang_up(_EXIT_SECONDS)
        with contextlib.suppress(OSError):
            self._ctrl.close()
        if not owner:
            return
        if self._popen is not None:
            self._popen.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)  # already reaped if running() saw it gone

    def _wait_hang_up(self, seconds: float) -> None:
        """Read until the launcher's end closes (it exited); kill it after ``seconds``
        (busy importing a module, it would answer only after that import)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._ctrl.settimeout(remaining)
            try:
                if not self._ctrl.recv(MAX_MESSAGE):
                    return
            except TimeoutError:
                break
        os.kill(self.pid, signal.SIGKILL)
