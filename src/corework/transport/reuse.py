"""Reusing a segment when the same bytes are sent again (one array passed to many
tasks): the copy is made once, and found again by the buffer's address and length —
compared first (``memcmp``), except within one :func:`sending_pass`."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import weakref
from collections.abc import Iterator

from .segments import Segment

__all__ = ["recall", "remember", "sending_pass"]

#: Buffers recently copied into segments, by (address, length): the same data sent again
#: (one array passed to many tasks) reuses the segment instead of taking more memory.
#: The last field is the sending pass that copied it (None: outside any pass).
_recent: dict[tuple[int, int], tuple[weakref.ref[Segment], int, object]] = {}
_recent_lock = threading.Lock()
_RECENT_MOST = 256
_memcmp = ctypes.CDLL(None).memcmp
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_memcmp.restype = ctypes.c_int


class _Pass(threading.local):
    token: object | None = None  # the pass under way in this thread
    held: list[memoryview] | None = None  # the buffers it copied, pinned until it ends


_pass = _Pass()


@contextlib.contextmanager
def sending_pass() -> Iterator[None]:
    """Within this block (in this thread), a buffer copied once is not compared again.

    The rule, and why it holds: a buffer copied into a segment during the pass (or
    compared equal to its earlier copy) is *pinned* — the pass holds a view of it until it
    ends — so its memory cannot be freed and reused by another object meanwhile: the same
    (address, length) later in the pass is the very same buffer. Whoever opens a pass
    promises that the thread runs none of the caller's code inside it: the map job opens
    one around packing chunks from a list, tuple or range whose items all exist already
    (not around a generator, whose next item may rewrite the last one), and packing runs
    only pickle's and the items' own reducers. So nothing in this thread writes the
    buffer between the copy and its reuse; a write from another thread meanwhile races
    with the map itself (there is no order in which some chunks ought to see it and
    others not), and as with any copy the chunks see the buffer as it was at one moment
    of the pass. Outside a pass (another map, the next items of a generator, ``submit``)
    the bytes are compared before a segment is reused. Nested passes are one pass.
    """
    if _pass.token is not None:
        yield
        return
    _pass.token, _pass.held = object(), []
    try:
        yield
    finally:
        _pass.token = _pass.held = None


def remember(address: int, nbytes: int, segment: Segment, offset: int,
             buffer: memoryview | None = None) -> None:
    """Note that the ``nbytes`` at ``address`` (``buffer``) were copied into ``segment``
    at ``offset``; within a sending pass the buffer is pinned until the pass ends."""
    token = _pass.token
    if token is not None and buffer is not None and _pass.held is not None:
        _pass.held.append(buffer)
    else:
        token = None
    with _recent_lock:
        if len(_recent) >= _RECENT_MOST:
            for key in [key for key, (ref, _, _) in _recent.items() if ref() is None]:
                del _recent[key]
            while len(_recent) >= _RECENT_MOST:
                del _recent[next(iter(_recent))]
        _recent[(address, nbytes)] = (weakref.ref(segment), offset, token)


def recall(address: int, nbytes: int,
           buffer: memoryview | None = None) -> tuple[Segment, int] | None:
    """A live segment already holding exactly these bytes (``buffer``): copied or found
    equal in this sending pass (see :func:`sending_pass`), or else compared, not assumed.
    """
    with _recent_lock:
        entry = _recent.get((address, nbytes))
    if entry is None:
        return None
    ref, offset, token = entry
    segment = ref()
    if segment is None:
        return None
    if token is not None and token is _pass.token:
        return segment, offset  # the very same pinned buffer, unwritten since: see above
    if _memcmp(address, segment.address() + offset, nbytes) != 0:
        return None  # changed since: send the new contents
    if _pass.token is not None and buffer is not None:  # equal now: the pass covers the rest
        remember(address, nbytes, segment, offset, buffer)
    return segment, offset
