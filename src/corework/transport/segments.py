"""Shared-memory segments: anonymous memory files that several processes map without copies.

A segment is a ``memfd``: a file with no name. Nothing can leak — the kernel frees it once
the last descriptor and the last mapping of it are gone, whoever was SIGKILLed — and it
does not live in ``/dev/shm``, so a small ``/dev/shm`` (Docker's 64 MB) does not limit it.
Descriptors travel between processes over Unix sockets (see ``channel``).

Two kinds of segment carry data:

* a **message segment** holds the large buffers of one message (a chunk's arguments, a
  chunk's results). It is written once by the sender, mapped copy-on-write by the receiver
  (reads share the pages; a write makes a private copy), and freed when both let go.
* a **share** is made by :func:`corework.share`: it has an id, stays mapped in this
  process while the object built on it is alive, and is *registered* here by address, so
  that pickling any buffer inside it sends a reference (id, offset, length) instead of the
  bytes. Workers map a share once and keep it until the caller lets go of it; listeners
  (the process engines) hear of that through :func:`on_release`. :func:`corework.empty`
  makes one with nothing copied in: the caller's array is born in it (:func:`blank_share`).

A buffer copied into a message segment is remembered (:func:`remember`), so that the
same bytes sent again reuse the segment; they are compared first (``memcmp``), except
within one ``reuse.sending_pass`` (see there for why that is safe).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import mmap
import os
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Buffers start at multiples of this in a segment (a cache line; more than any dtype needs).
ALIGN = 64

_MFD_NAME = "corework"


# ----------------------------------------------------------------------------- segments


def new_fd(size: int, name: str = _MFD_NAME) -> int:
    """A new anonymous memory file of ``size`` bytes (close-on-exec).

    Its name, seen in ``/proc/PID/fd`` and ``/proc/PID/maps``, is ``name-PID``: which
    process made it, for diagnostics and for the tests that prove none is left behind.
    """
    create = getattr(os, "memfd_create", None)
    if create is not None:
        fd: int = create(f"{name}-{os.getpid()}", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux: an unlinked temporary file is just as anonymous
        import tempfile

        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def layout(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Offsets for buffers of these sizes, each aligned to ALIGN, and the total size."""
    offsets = []
    end = 0
    for size in sizes:
        offsets.append(end)
        end += -(-size // ALIGN) * ALIGN
    return offsets, end


def filled(buffers: Sequence[memoryview], name: str = _MFD_NAME) -> tuple[int, int, list[int]]:
    """A new memory file holding copies of ``buffers``: its fd, size, and their offsets."""
    offsets, size = layout([buffer.nbytes for buffer in buffers])
    fd = new_fd(size, name)
    try:
        _write(fd, buffers, offsets)
    except BaseException:
        os.close(fd)
        raise
    return fd, size, offsets


def _write(fd: int, buffers: Sequence[memoryview], offsets: Sequence[int]) -> None:
    """Copy each buffer into the file at its offset (the one copy a transfer costs)."""
    for buffer, offset in zip(buffers, offsets, strict=True):
        view = buffer.cast("B") if buffer.format != "B" or buffer.ndim != 1 else buffer
        done = 0
        while done < view.nbytes:  # a single write stops short past 2 GiB
            done += os.pwrite(fd, view[done:], offset + done)


class Segment:
    """A message segment, held by the messages that use it; freed with the last of them."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._mapping: mmap.mmap | None = None
        # Not __del__: that runs while weak references (in _recent) still return the
        # object, so another thread could use the descriptor as it closes.
        weakref.finalize(self, _close, fd, os.getpid()).atexit = False

    @classmethod
    def holding(cls, buffers: Sequence[memoryview]) -> tuple[Segment, list[int]]:
        """A new segment with copies of ``buffers``, and their offsets in it."""
        fd, size, offsets = filled(buffers)
        return cls(fd, size), offsets

    def address(self) -> int:
        """Where the segment is mapped here (read-only, mapped on first use)."""
        if self._mapping is None:
            self._mapping = map_fd(self.fd, self.size, mmap.ACCESS_READ)
        return address_of(self._mapping)



def _close(fd: int, pid: int) -> None:
    if pid == os.getpid():  # a forked child never closes its parent's descriptors
        with contextlib.suppress(OSError):
            os.close(fd)


def map_fd(fd: int, size: int, access: int) -> mmap.mmap:
    """Map a segment; on Python 3.13+ without keeping a duplicate descriptor open."""
    if sys.version_info >= (3, 13):
        return mmap.mmap(fd, size, access=access, trackfd=False)
    return mmap.mmap(fd, size, access=access)


# ----------------------------------------------------------------------------- addresses


class _PyBuffer(ctypes.Structure):
    """The C ``Py_buffer`` struct (part of the stable ABI)."""

    _fields_ = [
        ("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


def address_of(buffer: Any) -> int:
    """The address of a contiguous buffer's first byte (read-only buffers too)."""
    view = _PyBuffer()
    _get_buffer(buffer, ctypes.byref(view), 0)  # PyBUF_SIMPLE; raises on failure
    try:
        return view.buf or 0
    finally:
        _release_buffer(ctypes.byref(view))


# ----------------------------------------------------------------------------- shares


@dataclass(eq=False)
class Share:
    """A share mapped in this process: where it lies, and the descriptor to pass it on."""

    id: str
    size: int
    writable: bool
    fd: int
    base: int
    mapping: weakref.ref[mmap.mmap]
    pid: int  # the process that mapped it: a forked child must not close its fd

    def access(self) -> int:
        return mmap.ACCESS_WRITE if self.writable else mmap.ACCESS_READ


_ids = itertools.count(1)
_lock = threading.Lock()
_shares: dict[str, Share] = {}
_unmapped: deque[Share] = deque()  # filled by finalizers (any thread), emptied under _lock
_listeners: list[weakref.WeakMethod[Callable[[str], None]]] = []


def create_share(buffers: Sequence[memoryview], writable: bool) -> tuple[mmap.mmap, list[int]]:
    """A new share holding copies of ``buffers``; returns its mapping and their offsets."""
    fd, size, offsets = filled(buffers, f"{_MFD_NAME}-share")
    try:
        mapping = _register(f"{os.getpid()}-{next(_ids)}", fd, size, writable)
    except BaseException:
        os.close(fd)
        raise
    return mapping, offsets


def blank_share(size: int, writable: bool) -> mmap.mmap:
    """A new share of ``size`` zero bytes, mapped writable here whatever ``writable`` says
    (which is what tasks get): the caller fills it in place, nothing is copied in.

    The pages are the memory file's from the start and are allocated as they are first
    written (a memory file reads as zeros where it was never written).
    """
    fd = new_fd(size, f"{_MFD_NAME}-share")
    try:
        return _register(f"{os.getpid()}-{next(_ids)}", fd, size, writable,
                         mmap.ACCESS_WRITE)
    except BaseException:
        os.close(fd)
        raise


def attach(share_id: str, fd: int, size: int, writable: bool) -> mmap.mmap:
    """The mapping of a share received from another process (mapped once per process).

    Takes ownership of ``fd``: it is closed here when the share is already mapped.
    """
    found = lookup(share_id)
    if found is not None:
        os.close(fd)
        return found[1]
    try:
        return _register(share_id, fd, size, writable)
    except BaseException:
        os.close(fd)
        raise


def _register(share_id: str, fd: int, size: int, writable: bool,
              access: int | None = None) -> mmap.mmap:
    share = Share(share_id, size, writable, fd, 0, None, os.getpid())  # type: ignore[arg-type]
    mapping = map_fd(fd, size, share.access() if access is None else access)
    share.base = address_of(mapping)
    share.mapping = weakref.ref(mapping)
    weakref.finalize(mapping, _on_unmapped, share).atexit = False
    with _lock:
        _prune()
        _shares[share_id] = share
    return mapping


def lookup(share_id: str) -> tuple[Share, mmap.mmap] | None:
    """The live share with this id and its mapping, if this process has it mapped."""
    with _lock:
        _prune()
        share = _shares.get(share_id)
    mapping = share.mapping() if share is not None else None
    return None if mapping is None else (share, mapping)  # type: ignore[return-value]


def find(address: int, nbytes: int) -> tuple[Share, mmap.mmap, int] | None:
    """The share that holds ``nbytes`` at ``address``, its mapping, and the offset there."""
    with _lock:
        _prune()
        shares = list(_shares.values())
    for share in shares:
        if share.base <= address and address + nbytes <= share.base + share.size:
            mapping = share.mapping()
            if mapping is not None:
                return share, mapping, address - share.base
    return None


def have_shares() -> bool:
    """Whether any share is mapped here (so pickled buffers need looking up)."""
    return bool(_shares)


def _prune() -> None:
    """Forget the shares whose mappings died (called with _lock held)."""
    while _unmapped:
        share = _unmapped.popleft()
        if _shares.get(share.id) is share:
            del _shares[share.id]


def _on_unmapped(share: Share) -> None:
    """A share's mapping was freed: close its descriptor and tell the listeners.

    Runs from the garbage collector, in any thread: it takes no lock.
    """
    if share.pid != os.getpid():
        return  # inherited by a forked child, which has already dropped it
    _unmapped.append(share)
    with contextlib.suppress(OSError):
        os.close(share.fd)
    for listener in list(_listeners):
        callback = listener()
        if callback is not None:
            callback(share.id)


def on_release(callback: Callable[[str], None]) -> None:
    """Call ``callback(share_id)`` when a share's mapping is freed here (held weakly)."""
    with _lock:
        _listeners[:] = [ref for ref in _listeners if ref() is not None]
        _listeners.append(weakref.WeakMethod(callback))


def _drop_in_child() -> None:
    """A forked child keeps the parent's mappings (its objects may use them) but not the
    registry: it never passes the parent's shares on, and never closes their descriptors."""
    global _lock
    _lock = threading.Lock()
    for share in _shares.values():
        with contextlib.suppress(OSError):
            os.close(share.fd)
    _shares.clear()
    _unmapped.clear()
    _listeners.clear()


os.register_at_fork(after_in_child=_drop_in_child)
