"""Which launcher starts a pool's workers: the process's one (:func:`get_launcher`: a cache
of the running launcher, started on first use, replaced when it dies and dropped in a
forked child — the process's one piece of shared state), or one of a pool's own, forked
from the caller at the pool's start (:func:`fork_own_launcher`). :class:`PoolLaunchers`
is a pool's choice among them, replaced when one dies. (The launcher itself, and why it
exists: ``launcher``.)"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
import threading
import weakref
from collections.abc import Sequence

from ...transport.inherited import holds
from . import present as _present
from . import worker as _worker
from .launcher import LauncherClient, LauncherDied
from .launcher_loop import ENV_CALLER, ENV_FD, ENV_PATH, drop_inherited_fds, serve
from .platform import is_single_threaded, pid_exists
from .warmup import Imports

__all__ = ["LAUNCHER_TRIES", "PoolLaunchers", "fork_own_launcher", "get_launcher",
           "launcher_pids"]

#: Launchers that may die in a row while a worker is being started, before giving up.
LAUNCHER_TRIES = 10


class PoolLaunchers:
    """The launcher that starts one pool's workers: the process's one; or one of the
    pool's own, forked now, with ``fork_caller`` or when its setup holds fork-context
    semaphores that the process's launcher, forked before them, lacks (see
    ``transport.inherited``). The pool's own are closed when it stops or is collected."""

    def __init__(self, fork_caller: bool, inherits: Sequence[tuple[int, int]]) -> None:
        self._fork_caller = fork_caller
        self._inherits = inherits
        self._own: list[LauncherClient] = []
        weakref.finalize(self, _close_all, self._own)
        self.current = self._new()

    def start_workers(self, socks: list[socket.socket], mode: str, warm: bool
                      ) -> tuple[list[int], LauncherClient]:
        """Have a launcher start the workers (their pids, and that launcher); one that
        died is replaced (a few times in a row at most: a launcher that cannot live is an
        error, not a loop)."""
        for attempt in range(LAUNCHER_TRIES):
            launcher = self.current
            try:
                return launcher.start_workers(socks, mode, warm=warm), launcher
            except (LauncherDied, TimeoutError):
                if attempt == LAUNCHER_TRIES - 1:
                    raise
                launcher.retire("(it did not answer in time)")
                self.current = self._new()  # if that one is gone
        raise AssertionError("unreachable")  # pragma: no cover

    def close_own(self) -> None:
        """The pool's workers are gone: its own launchers may go too."""
        _close_all(self._own)

    def _new(self) -> LauncherClient:
        if not self._fork_caller:
            launcher = get_launcher()
            if not self._inherits or holds(launcher.pid, self._inherits):
                return launcher
        launcher = fork_own_launcher()
        self._own.append(launcher)
        return launcher


def _close_all(launchers: list[LauncherClient]) -> None:
    for launcher in launchers:
        launcher.close()


_client: LauncherClient | None = None
_client_lock = threading.Lock()
#: Launchers that start no more workers (see LauncherClient.tainted_by) but still serve
#: the workers of pools made before; closed at exit.
_retired: list[LauncherClient] = []
#: Launchers of pools of their own (fork_own_launcher), closed by their pool or at exit.
_own: weakref.WeakSet[LauncherClient] = weakref.WeakSet()


def get_launcher() -> LauncherClient:
    """The running launcher, started on first use (forked if this process has no threads)
    and again whenever the last one has died (killed, or out of memory) or stopped
    forking."""
    global _client
    with _client_lock:
        if _client is None or not _client.running() or _client.tainted_by is not None:
            if _client is not None and pid_exists(_client.pid):
                _retired.append(_client)  # still serving other pools' workers
            elif _client is not None:
                _client.close()
            _client = _fork_launcher() if is_single_threaded() else _spawn_launcher()
        return _client


def launcher_pids() -> list[int]:
    """The pids of this process's launchers (the current one, any retired, and the
    pools' own)."""
    current = [_client.pid] if _client is not None and _client.alive else []
    own = [client.pid for client in list(_own) if client.alive]
    return [client.pid for client in _retired] + current + own


def fork_own_launcher() -> LauncherClient:
    """A launcher forked from this process now, for one pool (``start_method=
    "fork-caller"``, or initargs holding fork-context semaphores): its workers have
    everything this process has at this moment, as multiprocessing's fork gives. Forked
    even if this process has threads (as multiprocessing does, which warns); the pool
    closes it, or exit does."""
    with _client_lock:
        client = _fork_launcher()
        _own.add(client)
        return client


def _fork_launcher() -> LauncherClient:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _worker.flush_std_streams()
    present, imports = _present.capture(), Imports.loaded()
    caller = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            drop_inherited_fds(keep=theirs.fileno())
            serve(theirs, caller)
        finally:
            os._exit(0)
    theirs.close()
    return LauncherClient(ours, pid, None, present, imports)


def _spawn_launcher() -> LauncherClient:
    import json
    import subprocess

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    present = _present.capture()
    env = dict(present["env"], **{ENV_FD: str(theirs.fileno()), ENV_PATH: json.dumps(sys.path),
                                  ENV_CALLER: str(os.getpid())})
    popen = subprocess.Popen(
        [sys.executable, "-c", "from corework.engines.process.launcher_loop import main; main()"],
        pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return LauncherClient(ours, popen.pid, popen, present, Imports())


def _drop_in_child() -> None:
    """A forked child must not share its parent's launchers; it starts its own if needed."""
    global _client, _client_lock
    for client in [*_retired, _client, *list(_own)]:
        if client is not None:
            with contextlib.suppress(OSError):
                client._ctrl.close()
    _client = None
    _retired.clear()
    _own.clear()
    _client_lock = threading.Lock()


def _close_at_exit() -> None:
    global _client
    for client in [*_retired, _client, *list(_own)]:
        if client is not None and client.alive:
            client.close()
    _client = None
    _retired.clear()


os.register_at_fork(after_in_child=_drop_in_child)
atexit.register(_close_at_exit)
