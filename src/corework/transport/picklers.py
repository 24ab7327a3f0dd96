"""The picklers: the standard pickle wherever it sends an object as the caller means it,
cloudpickle by value where it cannot (lambdas, closures, what ``__main__`` defines: they
travel by value so every start method has them, and a re-defined function runs its new
body), both offering memoryviews as out-of-band buffers for the caller to place.

cloudpickle is imported only when something needs it: a first map of an importable
function over plain data never loads it (nor ``inspect``, which it imports)."""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

from . import inherited as _inherited
from .main_namespace import MainGlobals

__all__ = ["PROTOCOL", "by_value_pickler", "check_picklable", "dumps", "dumps_by_reference",
           "dumps_by_value", "in_band_dumps", "shaped_view"]

PROTOCOL = pickle.HIGHEST_PROTOCOL


class _NeedsValue(Exception):
    """The standard pickle would send this object by a reference that means another thing
    (or nothing) where it is loaded: cloudpickle must send it."""


class ByReferencePickler(pickle.Pickler):
    """The standard pickle, with memoryviews offered as out-of-band buffers."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = _reduce_memoryview(obj)
        return NotImplemented if reduced is None else reduced


class _PlainFirstPickler(ByReferencePickler):
    """The standard pickle for what goes by value: it refuses anything of ``__main__``
    (functions, classes, their instances, a TypeVar: by reference they would name the
    worker's ``__main__``, or nothing)."""

    def reducer_override(self, obj: Any) -> Any:
        try:
            module = obj.__module__ if isinstance(obj, (types.FunctionType, type)) \
                else getattr(obj, "__module__", None)
        except Exception:  # an object whose attributes raise: cloudpickle decides
            raise _NeedsValue(obj) from None
        if module == "__main__":
            raise _NeedsValue(obj)
        return super().reducer_override(obj)


def _plain_first_allowed() -> bool:
    """False once a module was registered to go by value (``corework run`` does that for
    the user's module): cloudpickle alone knows which."""
    cloudpickle = sys.modules.get("cloudpickle.cloudpickle")
    return cloudpickle is None or not getattr(cloudpickle, "_PICKLE_BY_VALUE_MODULES", None)


def dumps(obj: Any, by_value: bool, buffer_callback: Callable[[pickle.PickleBuffer], Any],
          discard: Callable[[], Any], spawning: bool = False) -> bytes:
    """Pickle ``obj``, offering its buffers to ``buffer_callback``: the standard pickle
    first, cloudpickle when that fails (``discard`` forgets the buffers the failed try
    offered). ``by_value``: what ``__main__`` defines goes by value. With ``spawning``,
    multiprocessing's reductions too."""
    if not by_value or _plain_first_allowed():
        file = io.BytesIO()
        plain = _plain_pickler(spawning) if by_value else ByReferencePickler
        try:
            plain(file, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
            return file.getvalue()
        except Exception:
            discard()
    file = io.BytesIO()
    by_value_pickler(spawning)(file, PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return file.getvalue()


@functools.cache
def _plain_pickler(spawning: bool) -> type[pickle.Pickler]:
    if not spawning:
        return _PlainFirstPickler
    from multiprocessing.reduction import ForkingPickler

    class SpawningPlainPickler(_PlainFirstPickler):
        dispatch_table = collections.ChainMap(  # noqa: RUF012 - pickle reads it here
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
            _copyreg_dispatch())

        def reducer_override(self, obj: Any) -> Any:
            reduced = _inherited.reduce_forked_semlock(obj)
            return super().reducer_override(obj) if reduced is None else reduced

    return SpawningPlainPickler


def _copyreg_dispatch() -> Any:
    import copyreg

    return copyreg.dispatch_table


@functools.cache
def by_value_pickler(spawning: bool = False) -> type[pickle.Pickler]:
    """cloudpickle, with memoryviews offered as out-of-band buffers, code objects keeping
    their file names, and functions of ``__main__`` given one shared namespace where they
    are loaded (see MainNamespace); with ``spawning``, multiprocessing's reductions too
    (its connections and sockets travel as descriptors: see ``inherited``). Made, and
    cloudpickle imported, on first use."""
    import cloudpickle

    class ByValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
        if hasattr(cloudpickle.cloudpickle, "_code_reduce"):  # cloudpickle's own, private
            dispatch_table = collections.ChainMap(
                {types.CodeType: _code_keeping_its_file}, cloudpickle.Pickler.dispatch_table)

        def reducer_override(self, obj: Any) -> Any:
            reduced = _reduce_memoryview(obj)
            return super().reducer_override(obj) if reduced is None else reduced

        def _function_getnewargs(self, func: Any) -> Any:
            code, base_globals, *rest = super()._function_getnewargs(func)
            if func.__globals__.get("__name__") == "__main__":
                base_globals = MainGlobals()
            return (code, base_globals, *rest)

    if not spawning:
        return ByValuePickler
    from multiprocessing.reduction import ForkingPickler

    class SpawningPickler(ByValuePickler):
        dispatch_table = collections.ChainMap(  # noqa: RUF012 - pickle reads it here
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
            ByValuePickler.dispatch_table)

        def reducer_override(self, obj: Any) -> Any:
            reduced = _inherited.reduce_forked_semlock(obj)
            return super().reducer_override(obj) if reduced is None else reduced

    return SpawningPickler


def in_band_dumps(obj: Any) -> bytes:
    """cloudpickle ``obj`` for a sub-interpreter, which cannot import corework: nothing
    of corework's in it, and ``__main__`` functions' globals become that sub-interpreter's
    one namespace (``engines.local.in_interpreter.main_namespace``) where they are loaded."""
    file = io.BytesIO()
    _in_band_pickler()(file, PROTOCOL).dump(obj)
    return file.getvalue()


class _SubinterpreterMain:
    """Pickled in place of a ``__main__`` function's globals for a sub-interpreter."""

    def __reduce__(self) -> tuple[Any, ...]:
        return sys.modules["_corework_in_interpreter"].main_namespace, ()


@functools.cache
def _in_band_pickler() -> type[pickle.Pickler]:
    import cloudpickle

    class InBandPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def _function_getnewargs(self, func: Any) -> Any:
            code, base_globals, *rest = super()._function_getnewargs(func)
            if (func.__globals__.get("__name__") == "__main__"
                    and "_corework_in_interpreter" in sys.modules):
                base_globals = _SubinterpreterMain()
            return (code, base_globals, *rest)

    return InBandPickler


def _code_keeping_its_file(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reduction of a code object, but with its file name kept (cloudpickle
    writes ``<dynamic-code>``), so that a worker's traceback shows the file and line."""
    import cloudpickle

    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    return constructor, tuple(code.co_filename if arg == "<dynamic-code>" else arg
                              for arg in args)


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
    would go out of band); raises what pickling raises. multiprocessing's locks and queues
    pass, as :func:`~corework.transport.packing.pack_items` sends them, but for those of
    a fork context: only workers forked after them could take them (engine="auto" runs
    such a map on threads, where any lock works)."""
    try:
        dumps(obj, True, _leave_out, _nothing)
    except RuntimeError:  # what multiprocessing's objects raise outside a spawn
        with _inherited.Spawning() as spawner:
            try:
                dumps(obj, True, _leave_out, _nothing, spawning=True)
                if spawner.inherits:
                    raise RuntimeError("a multiprocessing lock of a fork context is shared "
                                       "only with processes forked after it") from None
            finally:
                spawner.forget()


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
