"""Sending what ``multiprocessing`` lets travel only to a child process it starts itself.

Its ``Queue``, ``Lock``, ``Event`` and friends refuse to be pickled except while
``multiprocessing`` spawns a process ("should only be shared between processes through
inheritance"): the common ``initializer=setup_logging, initargs=(queue,)`` pattern. A
worker's setup is therefore pickled as if ``multiprocessing`` were spawning that worker:
:class:`Spawning` stands in for its process-starting object, the descriptors those objects
hold travel beside the message (over the worker's socket, with SCM_RIGHTS), and on arrival
:class:`PassedFd` finds each one again (:func:`receiving`). Semaphores travel by name, as
they do under ``multiprocessing``'s own spawn. A semaphore made in a *fork* context has
no name (it lives only in memory its maker's forked children share), so it travels by
its address and its mapping's inode (:func:`reduce_forked_semlock`): a worker forked
from a launcher forked after the semaphore was made has it at that address; one that
does not (an older launcher, a fresh interpreter) refuses it with a clear error rather
than use memory that is something else there. Process pools ask for a launcher that
holds the semaphores of their setup (:func:`holds`).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from stat import S_ISFIFO, S_ISSOCK
from typing import Any

_arrived = threading.local()  # .fds: the descriptors beside the message being unpickled


class Spawning:
    """``multiprocessing``'s spawning process object, while a message is pickled: it
    collects the descriptors to send, as shared duplicates (see :class:`_Duplicates`:
    a queue in a thousand queued tasks costs two descriptors, not two thousand),
    released once this object is gone."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        #: (address, inode) of each fork-context semaphore pickled: the receiver must
        #: have been forked from a process that had them.
        self.inherits: list[tuple[int, int]] = []
        #: The semaphores themselves: while the message may be sent, they stay mapped
        #: here (a replacement launcher forked later must find them).
        self.semaphores: list[Any] = []
        weakref.finalize(self, _DUPLICATES.release, self.fds)

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(_DUPLICATES.take(fd))
        return len(self.fds) - 1

    def forget(self) -> None:
        """Let go of what was collected so far (a pickling try that was given up)."""
        _DUPLICATES.release(self.fds)
        self.fds.clear()
        self.inherits.clear()
        self.semaphores.clear()

    def DupFd(self, index: int) -> PassedFd:
        return PassedFd(index)

    def __enter__(self) -> Spawning:
        from multiprocessing import context

        context.set_spawning_popen(self)  # type: ignore[arg-type]  # it quacks as one
        return self

    def __exit__(self, *exc: object) -> None:
        from multiprocessing import context

        context.set_spawning_popen(None)


class PassedFd:
    """A descriptor that travelled beside the message, by its place there."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        """The descriptor, now in this process (multiprocessing's ``DupFd`` interface)."""
        fds: Sequence[int] = getattr(_arrived, "fds", ())
        if self.index >= len(fds):
            raise OSError("a descriptor sent with this message did not arrive")
        return fds[self.index]


@contextlib.contextmanager
def receiving(fds: Sequence[int]) -> Iterator[None]:
    """While unpickling a message that came with these passed descriptors."""
    _arrived.fds = fds
    try:
        yield
    finally:
        _arrived.fds = ()


def reduce_forked_semlock(obj: Any) -> tuple[Any, ...] | None:
    """The reduction of a fork-context ``multiprocessing`` lock or semaphore (by its
    address and inode), or None for anything else. Only while :class:`Spawning`."""
    synchronize = sys.modules.get("multiprocessing.synchronize")
    if synchronize is None or not isinstance(obj, synchronize.SemLock):
        return None
    semlock = obj._semlock
    if semlock.name is not None:
        return None  # named: multiprocessing's own pickling finds it by name
    from multiprocessing import context

    spawning = context.get_spawning_popen()
    if not isinstance(spawning, Spawning):
        return None  # multiprocessing's own pickling explains why it cannot go
    inode = _mapped_inode(semlock.handle)
    if inode is None:  # no /proc to check a receiver by: never send a bare address
        raise RuntimeError(
            f"this multiprocessing {type(obj).__name__} was made in a fork context and can "
            "only be inherited; make it with multiprocessing.get_context('spawn') or a "
            "multiprocessing.Manager() to pass it to corework's workers")
    spawning.inherits.append((semlock.handle, inode))
    spawning.semaphores.append(obj)
    return _rebuild_forked_semlock, (type(obj), semlock.handle, semlock.kind,
                                     semlock.maxvalue, inode)


#: The semaphores rebuilt in this process, by (address, inode): one C object each, never
#: freed. Its end would ``sem_close`` the mapping every other copy of it uses.
_rebuilt: dict[tuple[int, int], Any] = {}
_rebuilt_lock = threading.Lock()


def _rebuild_forked_semlock(cls: type[Any], handle: int, kind: int, maxvalue: int,
                            inode: int) -> Any:
    with _rebuilt_lock:
        semlock = _rebuilt.get((handle, inode))
        if semlock is None:
            if _mapped_inode(handle) != inode:
                raise RuntimeError(
                    f"a multiprocessing {cls.__name__} made in a fork context after "
                    "corework's worker launcher started cannot reach this worker (it is "
                    "shared only by inheritance): make it before the first pool, pass it "
                    "in the pool's initargs, or make it with multiprocessing.get_context("
                    "'spawn') or a multiprocessing.Manager()")
            native = importlib.import_module("_multiprocessing")
            semlock = _rebuilt[(handle, inode)] = native.SemLock._rebuild(
                handle, kind, maxvalue, None)
    lock = object.__new__(cls)
    lock._semlock = semlock
    lock._make_methods()
    lock._is_fork_ctx = True  # shared by inheritance only, from here too
    return lock


def holds(pid: int, inherits: Iterable[tuple[int, int]]) -> bool:
    """Whether process ``pid`` has every one of these semaphores mapped where they were."""
    return all(_mapped_inode(address, pid) == inode for address, inode in inherits)


def _mapped_inode(address: int, pid: int | str = "self") -> int | None:
    """The inode of the semaphore file mapped at ``address`` in ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                if "/dev/shm/sem." in line and int(line.split("-", 1)[0], 16) == address:
                    fields = line.split()
                    if len(fields) >= 6 and fields[5].startswith("/dev/shm/sem."):
                        return int(fields[4])
                    return None
    except OSError:
        return None
    return None


class _Duplicates:
    """Duplicates of descriptors being sent. A pipe's or socket's end is shared by every
    message that sends it, found by (device, inode, read/write mode): a number the caller
    closed and reused is never mistaken for the old one (our duplicate keeps that open),
    and a pipe's two ends (one inode) stay apart. Each is closed when its last message is
    gone. Other files get a duplicate each (their offset is their own).

    ``release`` runs in finalizers — in any thread, and inside a garbage collection that
    may interrupt this very object's work — so it never waits for the lock: it queues the
    duplicates, and whoever holds the lock (or takes it next) closes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_file: dict[tuple[object, ...], list[int]] = {}  # -> [duplicate, users]
        self._file_of: dict[int, tuple[object, ...]] = {}  # duplicate -> its key
        self._released: deque[list[int]] = deque()  # from finalizers, not yet let go of

    def take(self, fd: int) -> int:
        stat = os.fstat(fd)
        shared = S_ISFIFO(stat.st_mode) or S_ISSOCK(stat.st_mode)
        key: tuple[object, ...] = (
            (stat.st_dev, stat.st_ino, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE)
            if shared else ("own", fd, object()))
        with self._lock:
            entry = self._by_file.get(key)
            if entry is None:
                entry = self._by_file[key] = [os.dup(fd), 0]
                self._file_of[entry[0]] = key
            entry[1] += 1
            duplicate = entry[0]
        self._settle()  # what finalizers released meanwhile
        return duplicate

    def release(self, fds: list[int]) -> None:
        """A message holding ``fds`` is gone (see the class docstring)."""
        self._released.append(list(fds))  # as they are now (forget() clears the list)
        self._settle()

    def _settle(self) -> None:
        """Let go of the queued duplicates, unless another caller holds the lock (it
        settles them when it is done)."""
        while self._released and self._lock.acquire(blocking=False):
            try:
                while self._released:
                    self._let_go(self._released.popleft())
            finally:
                self._lock.release()

    def _let_go(self, fds: list[int]) -> None:
        for fd in fds:
            key = self._file_of.get(fd)
            entry = self._by_file.get(key) if key is not None else None
            if key is None or entry is None:
                continue
            entry[1] -= 1
            if entry[1] <= 0:
                del self._by_file[key], self._file_of[fd]
                with contextlib.suppress(OSError):
                    os.close(fd)


_DUPLICATES = _Duplicates()
