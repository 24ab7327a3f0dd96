"""Packing: an object pickled for another process, its large buffers in shared memory.

The standard pickle first, cloudpickle where it cannot send an object as the caller means
it: functions and arguments of ``__main__`` go by value (see ``picklers``). Large buffers —
numpy arrays, memoryviews, anything with pickle protocol 5 buffers — go out of band,
through shared memory (see ``segments``), and buffers inside a :func:`corework.share` go as
references to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import SerializationError
from . import inherited as _inherited
from . import reuse as _reuse
from . import segments as _segments
from .picklers import dumps, in_band_dumps

__all__ = ["NO_LAYOUT", "OUT_OF_BAND_BYTES", "Layout", "Packed", "pack", "pack_for_workers",
           "pack_items", "pack_result", "unpack"]

#: Buffers at least this big travel through shared memory; smaller ones stay inline,
#: where a copy through the socket is cheaper than creating and mapping a segment.
OUT_OF_BAND_BYTES = 256 * 1024


@dataclass(frozen=True)
class Layout:
    """Where a message's out-of-band buffers are, so the receiver can map them.

    ``buffers``: (segment position, offset, length) of each, in the order pickle asks for
    them. ``segments``: (share id, or None for the message's own segment; size; writable).
    """

    buffers: tuple[tuple[int, int, int], ...] = ()
    segments: tuple[tuple[str | None, int, bool], ...] = ()
    passed: int = 0  # descriptors after the segments' that multiprocessing objects hold


NO_LAYOUT = Layout()


class Packed:
    """An object pickled for another process, its large buffers in shared memory.

    Send ``data`` with ``layout`` and the descriptors ``fds`` (one per segment). The
    segments stay open while this object lives (until :meth:`close`). ``inherits``: the
    fork-context semaphores in it, which only a process forked after them can rebuild
    (see ``inherited``).
    """

    __slots__ = ("_keep", "data", "fds", "inherits", "layout")

    def __init__(self, data: bytes, layout: Layout = NO_LAYOUT, fds: Sequence[int] = (),
                 keep: Sequence[Any] = (), inherits: Sequence[tuple[int, int]] = ()) -> None:
        self.data = data
        self.layout = layout
        self.fds = list(fds)
        self._keep = tuple(keep)
        self.inherits = tuple(inherits)

    @property
    def share_ids(self) -> list[str]:
        """The shares this message refers to."""
        return [share_id for share_id, _, _ in self.layout.segments if share_id is not None]

    def close(self) -> None:
        """Let go of the segments (receivers keep their own mappings)."""
        self._keep = ()


def pack(obj: Any, *, by_value: bool, inline_below: int = OUT_OF_BAND_BYTES,
         in_band: bool = False, spawning: bool = False) -> Packed:
    """Pickle ``obj``; buffers of ``inline_below`` bytes or more go into shared memory.

    Buffers that lie in a share are sent as references to it, whatever their size.
    ``by_value`` (functions and arguments): what ``__main__`` defines goes by value;
    the standard pickle is tried first either way, and cloudpickle after.
    ``in_band`` is plain cloudpickle, for receivers that cannot map segments (or import
    corework: sub-interpreters). With ``spawning``, multiprocessing's queues and locks
    may be in ``obj`` (a worker's setup: see ``inherited``).
    """
    if in_band:
        return Packed(in_band_dumps(obj))
    collector = _BufferCollector(inline_below)
    spawner = _inherited.Spawning() if spawning else None
    try:
        with spawner or contextlib.nullcontext():
            data = dumps(obj, by_value, collector, _forgetting(collector, spawner), spawning)
    except BaseException:
        collector.discard()
        raise
    packed = collector.seal(data)
    if spawner is None or not (spawner.fds or spawner.inherits):
        return packed
    layout = dataclasses.replace(packed.layout, passed=len(spawner.fds))
    return Packed(packed.data, layout, [*packed.fds, *spawner.fds], [packed, spawner],
                  spawner.inherits)


def _forgetting(collector: Any, spawner: _inherited.Spawning | None) -> Any:
    """What a given-up pickling try leaves: its buffers, and its descriptors' duplicates."""
    def forget() -> None:
        collector.discard()
        if spawner is not None:
            spawner.forget()
    return forget


def unpack(data: Any, layout: Layout, fds: Sequence[int]) -> Any:
    """Rebuild an object sent with :func:`pack`; takes ownership of ``fds``.

    The message's own segment is mapped copy-on-write (reads share the sender's pages;
    writes stay private); shares are mapped once per process, read-only unless writable.
    """
    passed = list(fds[len(fds) - layout.passed:]) if layout.passed else []
    fds = fds[:len(fds) - layout.passed]
    if passed:
        with _inherited.receiving(passed):
            return unpack(data, dataclasses.replace(layout, passed=0), fds)
    if not layout.segments:
        return pickle.loads(data)
    mappings = []
    remaining = list(fds)
    try:
        for (share_id, size, writable), fd in zip(layout.segments, fds, strict=True):
            remaining.remove(fd)
            if share_id is None:
                mapping = _segments.map_fd(fd, size, mmap.ACCESS_COPY)
                os.close(fd)
            else:
                mapping = _segments.attach(share_id, fd, size, writable)
            mappings.append(memoryview(mapping))
    finally:
        for fd in remaining:
            os.close(fd)
    buffers = [mappings[at][offset:offset + size] for at, offset, size in layout.buffers]
    return pickle.loads(data, buffers=buffers)



class _BufferCollector:
    """pickle's ``buffer_callback``: decides, buffer by buffer, inline or shared memory."""

    def __init__(self, inline_below: int) -> None:
        self.inline_below = inline_below
        self.refs: list[tuple[int, int, int]] = []  # the layout's buffers
        self.segments: list[_segments.Share | _segments.Segment] = []
        self.keep: list[Any] = []
        self.own: list[tuple[int, memoryview, int]] = []  # (index in refs, buffer, address)

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it inline
            return True
        if raw.nbytes and _segments.have_shares():
            found = _segments.find(_segments.address_of(raw), raw.nbytes)
            if found is not None:
                share, mapping, offset = found
                self.keep.append(mapping)
                self.refs.append((self._position(share), offset, raw.nbytes))
                return False
        if raw.nbytes < self.inline_below or not raw.nbytes:
            return True
        address = _segments.address_of(raw)
        sent = _reuse.recall(address, raw.nbytes, raw)
        if sent is not None:  # the same bytes went out recently: refer to them
            segment, offset = sent
            self.refs.append((self._position(segment), offset, raw.nbytes))
            return False
        self.own.append((len(self.refs), raw, address))
        self.refs.append((-1, 0, raw.nbytes))
        return False

    def _position(self, segment: _segments.Share | _segments.Segment) -> int:
        for position, known in enumerate(self.segments):
            if known is segment:
                return position
        self.segments.append(segment)
        return len(self.segments) - 1

    def seal(self, data: bytes) -> Packed:
        """Copy the message's own buffers into a new segment; the finished message."""
        if self.own:
            segment, offsets = _segments.Segment.holding([raw for _, raw, _ in self.own])
            position = self._position(segment)
            for (index, raw, address), offset in zip(self.own, offsets, strict=True):
                self.refs[index] = (position, offset, raw.nbytes)
                _reuse.remember(address, raw.nbytes, segment, offset, raw)
            self.own.clear()
        if not self.refs:
            return Packed(data)
        layout = Layout(tuple(self.refs), tuple(
            (segment.id, segment.size, segment.writable)
            if isinstance(segment, _segments.Share) else (None, segment.size, False)
            for segment in self.segments))
        fds = [segment.fd for segment in self.segments]
        return Packed(data, layout, fds, keep=[*self.keep, *self.segments])

    def discard(self) -> None:
        self.__init__(self.inline_below)  # type: ignore[misc]



#: What pickling user data in the caller may raise and still be that data's fault (a
#: KeyboardInterrupt is let through: in the caller's own thread it may be Ctrl-C).
_PICKLING_ERRORS = (Exception, SystemExit, GeneratorExit)


def pack_for_workers(obj: Any, what: str, in_band: bool = False,
                     spawning: bool = False) -> Packed:
    """Pickle ``obj`` (by value where needed) or raise an error saying ``what`` can't go."""
    try:
        return pack(obj, by_value=True, in_band=in_band, spawning=spawning)
    except _PICKLING_ERRORS as exc:
        hint = ("Make sure everything it refers to can be pickled, or use engine='thread'"
                if "fork context" not in str(exc) else
                "Make multiprocessing objects for it with multiprocessing.get_context("
                "'spawn'): corework's workers are not forked from this process")
        raise SerializationError(f"cannot send {what} to a worker process: {exc}. {hint}.",
                                 stage="pickle-argument", original=exc) from exc


def pack_items(items: Sequence[Any], describe: Any, in_band: bool = False) -> Packed:
    """Pickle a chunk's items; on failure name the first item that cannot be pickled.

    ``describe(position)`` names the task at that position in the chunk for the message.
    multiprocessing's queues, locks and events go as they do in a worker's setup (see
    ``inherited``): tried only when the plain pickling refused (they raise RuntimeError).
    """
    try:
        try:
            return pack(items, by_value=True, in_band=in_band)
        except RuntimeError:
            if in_band:
                raise
            return pack(items, by_value=True, spawning=True)
    except _PICKLING_ERRORS as exc:
        position = _first_unpicklable(items)
        where = describe(position) if position is not None else "a task"
        raise SerializationError(
            f"cannot send the arguments of {where} to a worker process: {exc}. "
            "Pass picklable arguments (or create the object inside the task), "
            "or use engine='thread'.", stage="pickle-argument", original=exc) from exc


def _first_unpicklable(items: Sequence[Any]) -> int | None:
    """The first item that cannot go (multiprocessing's objects can: see pack_items)."""
    for position, item in enumerate(items):
        try:
            pack(item, by_value=True, inline_below=sys.maxsize, spawning=True).close()
        except _PICKLING_ERRORS:
            return position
    return None



def pack_result(obj: Any) -> Packed:
    """Pickle a worker's message: standard pickle first, cloudpickle when that fails."""
    return pack(obj, by_value=False)
