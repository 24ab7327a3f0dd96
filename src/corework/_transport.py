"""Turning functions, arguments, results and exceptions into bytes and back.

Functions and arguments go by cloudpickle, so lambdas, closures and classes defined in
``__main__`` or a notebook cell travel by value. Results go by the standard pickle first
(faster for plain data) and fall back to cloudpickle. Large buffers — numpy arrays,
memoryviews, anything with pickle protocol 5 buffers — go out of band, through shared memory (see
``_segments``), and buffers inside a :func:`corework.share` go as references to it.

A task's exception travels as a :class:`Failure`: the exception itself when it pickles,
and always its type name, message and formatted traceback, so the caller can say what
happened even when it cannot be rebuilt.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import io
import mmap
import os
import pickle
import sys
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from . import _inherited, _segments
from ._errors import SerializationError

PROTOCOL = pickle.HIGHEST_PROTOCOL


class CallKind(enum.IntEnum):
    """How a chunk's items become calls of the task function."""

    ARG = 0  # fn(item)             -- map, imap
    STAR = 1  # fn(*item)           -- starmap, Executor.map over several iterables
    CALL = 2  # fn(*args, **kwargs) -- submit; item is (args, kwargs)


def call_one(fn: Any, kind: CallKind, item: Any) -> Any:
    """Call ``fn`` on one chunk item the way ``kind`` says."""
    if kind is CallKind.ARG:
        return fn(item)
    if kind is CallKind.STAR:
        return fn(*item)
    args, kwargs = item
    return fn(*args, **kwargs)


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
    segments stay open while this object lives (until :meth:`close`).
    """

    __slots__ = ("_keep", "data", "fds", "layout")

    def __init__(self, data: bytes, layout: Layout = NO_LAYOUT, fds: Sequence[int] = (),
                 keep: Sequence[Any] = ()) -> None:
        self.data = data
        self.layout = layout
        self.fds = list(fds)
        self._keep = tuple(keep)

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
    ``by_value`` pickles with cloudpickle (functions and arguments); otherwise the
    standard pickle is tried first (faster for plain data: results) and cloudpickle after.
    ``in_band`` is plain cloudpickle, for receivers that cannot map segments (or import
    corework: sub-interpreters). With ``spawning``, multiprocessing's queues and locks
    may be in ``obj`` (a worker's setup: see ``_inherited``).
    """
    if in_band:
        return Packed(cloudpickle.dumps(obj, protocol=PROTOCOL))
    collector = _BufferCollector(inline_below)
    spawner = _inherited.Spawning() if spawning else None
    try:
        with spawner or contextlib.nullcontext():
            data = _dumps(obj, by_value, collector, spawning)
    except BaseException:
        collector.discard()
        raise
    packed = collector.seal(data)
    if spawner is None or not spawner.fds:
        return packed
    layout = dataclasses.replace(packed.layout, passed=len(spawner.fds))
    return Packed(packed.data, layout, [*packed.fds, *spawner.fds], [packed, spawner])


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
        sent = _segments.recall(address, raw.nbytes)
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
                _segments.remember(address, raw.nbytes, segment, offset)
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


def _code_keeping_its_file(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reduction of a code object, but with its file name kept (cloudpickle
    writes ``<dynamic-code>``), so that a worker's traceback shows the file and line."""
    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    return constructor, tuple(code.co_filename if arg == "<dynamic-code>" else arg
                              for arg in args)



class _ByValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with memoryviews offered as out-of-band buffers, code objects keeping
    their file names, and functions of ``__main__`` given one shared namespace where they
    are loaded (see MainNamespace)."""

    if hasattr(cloudpickle.cloudpickle, "_code_reduce"):  # cloudpickle's own, private
        dispatch_table = collections.ChainMap({types.CodeType: _code_keeping_its_file},
                                              cloudpickle.Pickler.dispatch_table)

    def reducer_override(self, obj: Any) -> Any:
        reduced = _reduce_memoryview(obj)
        return super().reducer_override(obj) if reduced is None else reduced

    def _function_getnewargs(self, func: Any) -> Any:
        code, base_globals, *rest = super()._function_getnewargs(func)
        if func.__globals__.get("__name__") == "__main__":
            base_globals = _MainGlobals()
        return (code, base_globals, *rest)


class _MainGlobals:
    """Pickled in place of a ``__main__`` function's globals: loaded, it is the loading
    process's one :class:`MainNamespace`."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (main_namespace, ())


class MainNamespace(dict):  # type: ignore[type-arg]
    """The globals of every ``__main__`` function loaded in a worker: a script's (or a
    notebook's) functions see one another's globals there, as in one module — so a
    global an initializer sets is seen by the tasks, as under ``multiprocessing``.

    Functions sent later bring the caller's current values of the globals they use (a
    helper redefined in a notebook cell replaces the old one), except for the names the
    worker itself has set (:meth:`keep`), which they never overwrite."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: set[str] = set()

    def keep(self, names: set[str]) -> None:
        """These names belong to the worker now (an initializer set them)."""
        self._kept |= names

    def update(self, *args: Any, **kwargs: Any) -> None:
        incoming = dict(*args, **kwargs)
        super().update({k: v for k, v in incoming.items() if k not in self._kept})


_main_namespace: MainNamespace | None = None


def main_namespace() -> MainNamespace:
    """This process's namespace for loaded ``__main__`` functions."""
    global _main_namespace
    if _main_namespace is None:
        _main_namespace = MainNamespace()
    return _main_namespace


def run_initializer(initializer: Any, initargs: tuple[Any, ...]) -> None:
    """Call a worker's initializer; the ``__main__`` globals it sets are the worker's."""
    namespace = main_namespace()
    before = dict(namespace)
    initializer(*initargs)
    namespace.keep({name for name, value in namespace.items()
                    if name not in before or before[name] is not value})


class _ByReferencePickler(pickle.Pickler):
    """The standard pickle, with memoryviews offered as out-of-band buffers."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = _reduce_memoryview(obj)
        return NotImplemented if reduced is None else reduced


def _dumps(obj: Any, by_value: bool, collector: _BufferCollector,
           spawning: bool = False) -> bytes:
    file = io.BytesIO()
    if not by_value:
        try:
            _ByReferencePickler(file, PROTOCOL, buffer_callback=collector).dump(obj)
            return file.getvalue()
        except Exception:
            collector.discard()
            file = io.BytesIO()
    pickler_class = _spawning_pickler() if spawning else _ByValuePickler
    pickler_class(file, PROTOCOL, buffer_callback=collector).dump(obj)
    return file.getvalue()


@functools.cache
def _spawning_pickler() -> type[_ByValuePickler]:
    """Our by-value pickler with multiprocessing's own reductions (its connections and
    sockets travel as descriptors: see ``_inherited``), made on first use."""
    from multiprocessing.reduction import ForkingPickler

    class SpawningPickler(_ByValuePickler):
        dispatch_table = collections.ChainMap(  # noqa: RUF012 - pickle reads it here
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
            _ByValuePickler.dispatch_table)

    return SpawningPickler


def sent_as(fn: Any) -> Any:
    """A key that changes whenever ``fn`` would pickle differently because a name it uses
    was rebound: for the scheduler's cache of pickled functions.

    A function defined in ``__main__`` (a script, a notebook cell) travels by value, with
    the ``__main__`` globals it uses as they were when it was pickled. Re-running a cell
    that defines a helper rebinds the helper's name; the key then changes, so a warm pool
    sends the caller's function again and the new helper runs, not the stale one. (A global
    *mutated* in place is not noticed: pass such data as an argument.) Other functions are
    their own key.
    """
    if getattr(fn, "__module__", None) != "__main__" or not hasattr(fn, "__code__"):
        return fn
    bound: list[_Same] = []
    seen: set[int] = {id(fn)}
    todo = [fn]
    while todo:
        current = todo.pop()
        namespace = getattr(current, "__globals__", {})
        for name in _global_names(current.__code__):
            value = namespace.get(name)
            bound.append(_Same(value))
            if (isinstance(value, types.FunctionType) and value.__module__ == "__main__"
                    and id(value) not in seen):
                seen.add(id(value))
                todo.append(value)
    return (fn, tuple(bound))


class _Same:
    """Equal only to the same object; holds it, so its id is not reused while cached."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _global_names(code: types.CodeType) -> list[str]:
    """The names ``code`` (and the functions and classes nested in it) may look up."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return names


def dumps_by_value(obj: Any, buffer_callback: Any = None) -> bytes:
    """cloudpickle ``obj`` (memoryviews too), offering its buffers to ``buffer_callback``
    (for engines that place large buffers themselves, such as the dask engine)."""
    file = io.BytesIO()
    _ByValuePickler(file, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return file.getvalue()


def dumps_by_reference(obj: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
    """The standard pickle of ``obj`` (memoryviews too; cloudpickle if it fails), with
    every buffer out of band, appended to ``buffers`` (for results on the dask engine)."""
    file = io.BytesIO()
    try:
        _ByReferencePickler(file, PROTOCOL, buffer_callback=buffers.append).dump(obj)
        return file.getvalue()
    except Exception:
        buffers.clear()
    return dumps_by_value(obj, buffers.append)


def _reduce_memoryview(obj: Any) -> tuple[Any, ...] | None:
    """Make memoryviews picklable, as out-of-band buffers (pickle cannot send them at all).

    bytes and bytearray can't be offered out of band this way: pickle's C implementation
    never asks about them. They own their memory, so a receiver must copy them anyway.
    """
    if type(obj) is not memoryview:
        return None
    source = pickle.PickleBuffer(obj) if obj.contiguous else obj.tobytes()
    return shaped_view, (source, obj.format, obj.shape, obj.readonly)


def shaped_view(buffer: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    """A memoryview of ``buffer`` with this format and shape (plain bytes if it can't be)."""
    view = memoryview(buffer)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    with contextlib.suppress(TypeError, ValueError):
        view = view.cast(fmt, shape)  # type: ignore[call-overload]
    return view.toreadonly() if readonly else view


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
    """
    try:
        return pack(items, by_value=True, in_band=in_band)
    except _PICKLING_ERRORS as exc:
        position = _first_unpicklable(items)
        where = describe(position) if position is not None else "a task"
        raise SerializationError(
            f"cannot send the arguments of {where} to a worker process: {exc}. "
            "Pass picklable arguments (or create the object inside the task), "
            "or use engine='thread'.", stage="pickle-argument", original=exc) from exc


def _first_unpicklable(items: Sequence[Any]) -> int | None:
    for position, item in enumerate(items):
        try:
            pack(item, by_value=True, inline_below=sys.maxsize).close()
        except _PICKLING_ERRORS:
            return position
    return None


def check_picklable(obj: Any) -> None:
    """Pickle ``obj`` as a task's function or argument would be, copying no buffer (they
    would go out of band); raises what pickling raises."""
    _ByValuePickler(io.BytesIO(), PROTOCOL, buffer_callback=_leave_out).dump(obj)


def _leave_out(buffer: pickle.PickleBuffer) -> bool:
    return False  # out of band: not copied into the pickle (and here, nowhere)


def pack_result(obj: Any) -> Packed:
    """Pickle a worker's message: standard pickle first, cloudpickle when that fails."""
    return pack(obj, by_value=False)


class Failure:
    """What a task raised, in a form that can always cross a process boundary."""

    __slots__ = ("exc", "message", "traceback", "type_name")

    def __init__(
        self, exc: BaseException | None, type_name: str, message: str, tb: str
    ) -> None:
        self.exc = exc
        self.type_name = type_name
        self.message = message
        self.traceback = tb

    @classmethod
    def capture(cls, exc: BaseException, skip: int = 0) -> Failure:
        """Record ``exc`` as raised just now; ``skip`` drops corework's own outer frames."""
        tb_top = exc.__traceback__
        for _ in range(skip):
            if tb_top is not None and tb_top.tb_next is not None:
                tb_top = tb_top.tb_next
        exc.__traceback__ = tb_top
        tb = "".join(traceback.format_exception(type(exc), exc, tb_top))
        return cls(exc, type(exc).__qualname__, str(exc), tb)

    def __reduce__(self) -> tuple[Any, ...]:
        exc_bytes: bytes | None = None
        try:
            blob = cloudpickle.dumps(self.exc, protocol=PROTOCOL)
            pickle.loads(blob)  # an exception that can't be rebuilt is sent as text
            exc_bytes = blob
        except BaseException:  # whatever its __reduce__ raises: SystemExit too
            pass
        return (_rebuild_failure, (exc_bytes, self.type_name, self.message, self.traceback))


def _rebuild_failure(exc_bytes: bytes | None, type_name: str, message: str, tb: str) -> Failure:
    exc = None
    if exc_bytes is not None:
        try:
            exc = pickle.loads(exc_bytes)
        except BaseException:  # it cannot be rebuilt here: the caller sees a TaskError
            exc = None
    if exc is not None:
        exc.__traceback__ = None
    return Failure(exc, type_name, message, tb)
