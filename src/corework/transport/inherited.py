"""Sending what ``multiprocessing`` lets travel only to a child process it starts itself.

Its ``Queue``, ``Lock``, ``Event`` and friends refuse to be pickled except while
``multiprocessing`` spawns a process ("should only be shared between processes through
inheritance"): the common ``initializer=setup_logging, initargs=(queue,)`` pattern. A
worker's setup is therefore pickled as if ``multiprocessing`` were spawning that worker:
:class:`Spawning` stands in for its process-starting object, the descriptors those objects
hold travel beside the message (over the worker's socket, with SCM_RIGHTS), and on arrival
:class:`PassedFd` finds each one again (:func:`receiving`). Semaphores travel by name, as
they do under ``multiprocessing``'s own spawn — so objects made in a *fork* context still
refuse: ``multiprocessing`` shares those with forked children only.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator, Sequence

_arrived = threading.local()  # .fds: the descriptors beside the message being unpickled


class Spawning:
    """``multiprocessing``'s spawning process object, while a setup is pickled: it
    collects duplicates of the descriptors to send (closed once this object is gone)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        weakref.finalize(self, _close_all, self.fds)

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(os.dup(fd))
        return len(self.fds) - 1

    def forget(self) -> None:
        """Close the duplicates collected so far (a pickling try that was given up)."""
        _close_all(self.fds)
        self.fds.clear()

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


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
