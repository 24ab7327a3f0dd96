"""The picklers: cloudpickle by value (functions, arguments: lambdas, closures and
``__main__`` classes travel) and the standard pickle by reference (results: faster for
plain data), both offering memoryviews as out-of-band buffers for the caller to place."""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import pickle
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

from .main_namespace import MainGlobals

__all__ = ["PROTOCOL", "ByValuePickler", "check_picklable", "dumps", "dumps_by_reference",
           "dumps_by_value", "shaped_view"]

PROTOCOL = pickle.HIGHEST_PROTOCOL


def _code_keeping_its_file(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reduction of a code object, but with its file name kept (cloudpickle
    writes ``<dynamic-code>``), so that a worker's traceback shows the file and line."""
    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    return constructor, tuple(code.co_filename if arg == "<dynamic-code>" else arg
                              for arg in args)


class ByValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
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
            base_globals = MainGlobals()
        return (code, base_globals, *rest)


class ByReferencePickler(pickle.Pickler):
    """The standard pickle, with memoryviews offered as out-of-band buffers."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = _reduce_memoryview(obj)
        return NotImplemented if reduced is None else reduced


def dumps(obj: Any, by_value: bool, buffer_callback: Callable[[pickle.PickleBuffer], Any],
          discard: Callable[[], Any], spawning: bool = False) -> bytes:
    """Pickle ``obj``, offering its buffers to ``buffer_callback``: by value, or by
    reference first and by value when that fails (``discard`` forgets the buffers the
    failed try offered). With ``spawning``, multiprocessing's reductions too."""
    file = io.BytesIO()
    if not by_value:
        try:
            ByReferencePickler(file, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
            return file.getvalue()
        except Exception:
            discard()
            file = io.BytesIO()
    pickler_class = spawning_pickler() if spawning else ByValuePickler
    pickler_class(file, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return file.getvalue()


@functools.cache
def spawning_pickler() -> type[ByValuePickler]:
    """Our by-value pickler with multiprocessing's own reductions (its connections and
    sockets travel as descriptors: see ``inherited``), made on first use."""
    from multiprocessing.reduction import ForkingPickler

    class SpawningPickler(ByValuePickler):
        dispatch_table = collections.ChainMap(  # noqa: RUF012 - pickle reads it here
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
            ByValuePickler.dispatch_table)

    return SpawningPickler


def dumps_by_value(obj: Any, buffer_callback: Any = None) -> bytes:
    """cloudpickle ``obj`` (memoryviews too), offering its buffers to ``buffer_callback``
    (for engines that place large buffers themselves, such as the dask engine)."""
    return dumps(obj, True, buffer_callback, _nothing)


def dumps_by_reference(obj: Any, buffers: list[pickle.PickleBuffer]) -> bytes:
    """The standard pickle of ``obj`` (memoryviews too; cloudpickle if it fails), with
    every buffer out of band, appended to ``buffers`` (for results on the dask engine)."""
    return dumps(obj, False, buffers.append, buffers.clear)


def check_picklable(obj: Any) -> None:
    """Pickle ``obj`` as a task's function or argument would be, copying no buffer (they
    would go out of band); raises what pickling raises."""
    ByValuePickler(io.BytesIO(), PROTOCOL, buffer_callback=_leave_out).dump(obj)


def _leave_out(buffer: pickle.PickleBuffer) -> bool:
    return False  # out of band: not copied into the pickle (and here, nowhere)


def _nothing() -> None:
    """Nothing to forget: a by-value pickle is never retried."""


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
