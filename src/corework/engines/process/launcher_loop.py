"""The launcher process itself: one loop that starts workers and mirrors its caller.

It serves requests on its control socket (see ``launcher`` for the caller's side)::

    ("start", id, mode, warm) + its socket   ──▶  ("started", id, pid) | ("failed", id, why)
    ("kill", pid, signal)                    ──▶  (no answer; only its own children)
    ("present", changes)                     ──▶  (no answer; see present)
    ("warm", module names)                   ──▶  ("warmed", requests, imported, skipped,
                                                    tainted_by) once none is left to import
    ("exit",)  or end-of-file                ──▶  workers killed, the launcher exits
                                             ◀──  ("exited", pid, exit code), unasked

It keeps nothing of the caller but what it needs: a forked launcher points every file
descriptor it inherited at /dev/null (:func:`drop_inherited_fds`), and it dies with its
caller however many processes hold its socket (a pidfd on the caller, else polling).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import socket
import sys
import time
from typing import Any

from ..._signals import unblock_in_this_thread
from . import present as _present
from . import worker as _worker
from .platform import prepare_for_forks, set_parent_death_signal
from .warmup import Warmer

ENV_FD = "COREWORK_LAUNCHER_FD"
ENV_PATH = "COREWORK_SYS_PATH"
ENV_CALLER = "COREWORK_CALLER"
MAX_MESSAGE = 256 * 1024
#: How often a launcher without a pidfd looks whether its caller is still there.
CALLER_POLL_SECONDS = 0.5
#: How often a launcher with modules to import looks for a free core.
WARM_POLL_SECONDS = 0.05
#: How long the workers must have left a core free before the warm-up goes on.
WARM_AFTER_SECONDS = 0.25
#: How long a new pool's workers wait for the warm-up at most (the caller waits for
#: their pids meanwhile, and kills and exits of other pools are served only after it).
WARM_WAIT_SECONDS = 5.0
#: Skipped modules named in one "warmed" report at most (it must fit one message).
REPORTED_SKIPS = 50
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Launcher:
    """The loop of the launcher process (single-threaded: should an import give it a
    thread, it executes workers afresh instead of forking them)."""

    def __init__(self, ctrl: socket.socket, caller: int) -> None:
        self.ctrl = ctrl
        self.caller = caller
        self.children: set[int] = set()
        self.warmer = Warmer()
        self.warm_requests = 0
        self.wake_r, self.wake_w = os.pipe()
        self.watch = _watch(caller)
        self._cpu_sample = (0.0, 0)  # (when, workers' CPU ticks) at the last look
        self._free_since: float | None = None  # since when they have left a core free
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1

    def serve(self) -> None:
        """Serve until the caller is gone, then kill and reap every worker."""
        _reset_signal_handlers()
        unblock_in_this_thread()  # made from a thread of corework's, it inherited its mask
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
        prepare_for_forks()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            while self._caller_alive() and self._turn():
                pass
        finally:
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in self.children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def _turn(self) -> bool:
        """Wait for a request, a child's exit or the caller's end; import a module of the
        warm-up when nothing else is to do. False when the caller is gone."""
        timeout = None if self.watch is not None else CALLER_POLL_SECONDS
        warm = self.warmer.pending and self._cores_free()
        if self.warmer.pending:
            timeout = 0.0 if warm else WARM_POLL_SECONDS
        watched = [self.ctrl.fileno(), self.wake_r]
        if self.watch is not None:
            watched.append(self.watch)
        readable, _, _ = select.select(watched, [], [], timeout)
        if self.watch in readable:
            return False
        if self.wake_r in readable:
            os.read(self.wake_r, 4096)
            self._reap()
        if self.ctrl.fileno() in readable:
            return self._handle()
        if warm:
            self._warm()
        return True

    def _cores_free(self) -> bool:
        """Whether the workers left a core free over the last look (the warm-up waits for
        one: a first pool's workers may be importing the same libraries themselves)."""
        ticks = 0
        for pid in self.children:
            with contextlib.suppress(OSError, IndexError, ValueError), \
                    open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])  # user and system time
        now = time.monotonic()
        then, before = self._cpu_sample
        self._cpu_sample = (now, ticks)
        used = (ticks - before) / _CLOCK_TICKS / max(now - then, 1e-3)
        if now - then > 1.0 or used >= self.cores - 0.5:
            self._free_since = None
        elif self._free_since is None:
            self._free_since = now
        return self._free_since is not None and now - self._free_since >= WARM_AFTER_SECONDS

    def _caller_alive(self) -> bool:
        return self.watch is not None or os.getppid() == self.caller

    def _handle(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.ctrl, MAX_MESSAGE, 1)
        except ConnectionResetError:
            return False
        if not data:
            return False
        request = pickle.loads(data)
        kind = request[0]
        if kind == "start":
            self._start(request[1], request[2], request[3], fds[0])
        elif kind == "kill" and request[1] in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(request[1], request[2])
        elif kind == "present":
            _present.apply(request[1], self.caller)
        elif kind == "warm":
            self.warm_requests += 1
            self.warmer.add(request[1])
            if not self.warmer.pending:
                self._report_warmed()
        elif kind == "exit":
            return False
        for fd in fds[1:] if kind == "start" else fds:
            os.close(fd)
        return True

    def _start(self, request_id: int, mode: str, warm: bool, fd: int) -> None:
        """Fork a worker; with ``warm``, once the modules named so far are imported (for
        ``WARM_WAIT_SECONDS`` at most: then it is forked as warm as it gets)."""
        deadline = time.monotonic() + WARM_WAIT_SECONDS
        while warm and self.warmer.pending and time.monotonic() < deadline:
            self._warm()
        try:
            if self.warmer.tainted_by is not None:
                mode = "spawn"  # this process has threads now: never fork Python here
            pid = self._fork_worker(fd, mode)
            self.children.add(pid)
            self.send(("started", request_id, pid))
        except OSError as exc:
            self.send(("failed", request_id, str(exc)))
        finally:
            os.close(fd)

    def _fork_worker(self, fd: int, mode: str) -> int:
        launcher = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the new worker: drop the launcher's machinery, then serve or exec
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.ctrl.close()
            for own in (self.wake_r, self.wake_w, self.watch):
                if own is not None:
                    os.close(own)
            set_parent_death_signal()
            if os.getppid() != launcher:  # the launcher died before we could watch it
                os._exit(1)
            _close_on_exec_all()
            if mode == "spawn":
                _exec_worker(fd)
            code = _worker.serve_fd(fd)
        finally:
            _worker.finish_process()
            os._exit(code)

    def _warm(self) -> None:
        self.warmer.step()
        if not self.warmer.pending:
            gc.freeze()  # what the imports made, out of the workers' collections too
            self._report_warmed()

    def _report_warmed(self) -> None:
        warmer = self.warmer
        self.send(("warmed", self.warm_requests, warmer.imported,
                   warmer.skipped[:REPORTED_SKIPS], warmer.tainted_by))
        warmer.skipped = []

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send(("exited", pid, os.waitstatus_to_exitcode(status)))

    def send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the caller is gone: the next recv says so
            self.ctrl.send(pickle.dumps(message))


def serve(ctrl: socket.socket, caller: int) -> None:
    """Be the launcher of ``caller`` on ``ctrl``."""
    Launcher(ctrl, caller).serve()


def _watch(caller: int) -> int | None:
    """A pidfd that becomes readable when the caller ends (None: poll ``getppid``)."""
    try:
        fd = os.pidfd_open(caller)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None
    if os.getppid() != caller:  # it ended (and its pid may be another's) before we looked
        os.close(fd)
        os._exit(0)
    os.set_inheritable(fd, False)
    return int(fd)


def _reset_signal_handlers() -> None:
    """Drop the Python signal handlers a forked launcher inherited from the caller's code
    (a SIGTERM handler meant for the application must not run here, nor in workers)."""
    for number in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(number)):
                signal.signal(number, signal.SIG_DFL)


def _close_on_exec_all() -> None:
    """Mark every descriptor past stderr close-on-exec: whatever a library imported here
    opened without the flag, a program a task starts must not hold it (the channel is
    made inheritable again only to execute a fresh worker)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for fd in map(int, names):
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own, already closed
                os.set_inheritable(fd, False)


def drop_inherited_fds(keep: int) -> None:
    """Point every descriptor but stdin/stdout/stderr and ``keep`` at /dev/null,
    close-on-exec: the launcher (and every worker) then holds nothing of the caller's
    files, pipes or sockets. Not closed outright: a Python object inherited from the caller
    still owns each number, and would close whatever took it next."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in map(int, names):
        if fd > 2 and fd not in (keep, devnull):
            with contextlib.suppress(OSError):  # the listing's own, already closed
                os.fstat(fd)
                os.dup2(devnull, fd, inheritable=False)
    os.close(devnull)


# json is imported where a fresh interpreter is executed (start_method="spawn", or a
# launcher that had to stop forking), not by every forked worker.


def _exec_worker(fd: int) -> None:
    import json

    os.set_inheritable(fd, True)
    env = dict(os.environ, **{ENV_PATH: json.dumps(sys.path)})
    argv = [sys.executable, "-c", "from corework.engines.process.worker import main; main()",
            str(fd)]
    os.execve(sys.executable, argv, env)


def main() -> None:
    """Entry point of a spawned launcher (see ``_launcher._spawn_launcher``)."""
    import json

    sys.path[:] = json.loads(os.environ.pop(ENV_PATH, "[]")) or sys.path
    fd = int(os.environ.pop(ENV_FD))
    caller = int(os.environ.pop(ENV_CALLER))
    serve(socket.socket(fileno=fd), caller)
