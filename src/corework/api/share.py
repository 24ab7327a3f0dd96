"""``cw.share``: put an object's data into shared memory once, for any number of tasks."""

from __future__ import annotations

import pickle
from typing import Any, TypeVar, overload

import cloudpickle

from ..transport import segments as _segments
from ..transport.picklers import PROTOCOL, shaped_view

T = TypeVar("T")


@overload
def share(obj: bytes | bytearray | memoryview, *, writable: bool = False) -> memoryview: ...


@overload
def share(obj: T, *, writable: bool = False) -> T: ...


def share(obj: Any, *, writable: bool = False) -> Any:
    """Copy ``obj``'s buffers into shared memory once; return an equivalent object on it.

    Pass the returned object (or views of it) to any number of tasks: on the process
    engine each worker maps it once and reads it in place — no copy per task or per
    worker; on the thread engine it is simply the object. numpy arrays (and objects made
    of them: pandas frames, Arrow tables, dicts of arrays) come back as the same type;
    bytes, bytearray and memoryview come back as a memoryview.

    The result is read-only unless ``writable=True``; then tasks may write into it and the
    caller sees their writes (give each task its own slice). The memory is freed once the
    returned object, its views, and the pool tasks that use it are all gone.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _share_bytes(memoryview(obj), writable)
    buffers: list[memoryview] = []
    data = _dumps(obj, buffers)
    if not buffers:
        raise TypeError(
            f"cw.share() puts an object's buffers in shared memory, and this "
            f"{type(obj).__qualname__} has none: it pickles without protocol-5 buffers "
            "(numpy arrays, bytes, memoryviews, pandas and Arrow data have them, except numpy "
            "arrays of datetime64/timedelta64 or objects: share `a.view('int64')` and view it "
            "back in the task). Or pass it to tasks as an ordinary argument.")
    if not any(buffer.nbytes for buffer in buffers):
        return pickle.loads(data, buffers=[bytearray() for _ in buffers])
    mapping, offsets = _segments.create_share(buffers, writable)
    whole = memoryview(mapping)
    views = [whole[at:at + buffer.nbytes] for at, buffer in zip(offsets, buffers, strict=True)]
    return pickle.loads(data, buffers=views)


def _dumps(obj: Any, buffers: list[memoryview]) -> bytes:
    """Pickle ``obj`` with every contiguous buffer out of band, collected in ``buffers``."""

    def collect(buffer: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(buffer.raw())
        except BufferError:  # not contiguous: stays inside the pickle
            return True
        return False

    try:
        return pickle.dumps(obj, PROTOCOL, buffer_callback=collect)
    except Exception:
        buffers.clear()
        return cloudpickle.dumps(obj, PROTOCOL, buffer_callback=collect)  # type: ignore[no-any-return]


def _share_bytes(view: memoryview, writable: bool) -> memoryview:
    source = view if view.contiguous else memoryview(view.tobytes())
    flat = source.cast("B") if source.format != "B" or source.ndim != 1 else source
    if not flat.nbytes:
        return shaped_view(bytearray(), view.format, view.shape or (), not writable)
    mapping, _ = _segments.create_share([flat], writable)
    shared = memoryview(mapping)[:flat.nbytes]
    return shaped_view(shared, view.format, view.shape or (), not writable)
