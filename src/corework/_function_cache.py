"""The scheduler's cache of prepared task functions: ``submit(fn, x)`` a thousand times
pickles ``fn`` once, and each worker receives it once.

The cache never keeps a task's data alive: it holds a function only weakly (a closure
holds its data; once the caller drops it, its entry goes at the next miss), keeps what
the engine made of it (its id and pickled form), and hands out a new
:class:`FunctionRef` each time. Bound methods are not cached: each ``obj.method`` is a
new object, and it holds ``obj``.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ._transport import sent_as
from .engines import FunctionRef

#: Task functions whose prepared form a pool keeps.
FUNCTION_CACHE_SIZE = 64


class FunctionCache:
    """Prepared functions by what makes them pickle differently (see ``sent_as``)."""

    def __init__(self, prepare: Callable[[Callable[..., Any]], FunctionRef]) -> None:
        self._prepare = prepare
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, tuple[int, Any]] = OrderedDict()  # key -> (id, blob)

    def get(self, fn: Callable[..., Any]) -> FunctionRef:
        """``fn`` prepared: from the cache when it was prepared before."""
        key = _key(fn)
        if key is None:
            return self._prepare(fn)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return FunctionRef(entry[0], fn, entry[1])
        ref = self._prepare(fn)
        with self._lock:
            for dead in [k for k in self._entries if isinstance(k, _Weak) and k.dead()]:
                del self._entries[dead]
            self._entries[key] = (ref.id, ref.blob)
            while len(self._entries) > FUNCTION_CACHE_SIZE:
                self._entries.popitem(last=False)
        return ref


def _key(fn: Callable[..., Any]) -> Any:
    """The cache key of ``fn``, or None if it is not cached."""
    if isinstance(fn, types.FunctionType):
        if fn.__module__ == "__main__" and fn.__closure__ is None:
            return sent_as(fn)  # a script's function: anew once a helper is redefined
        return _Weak(fn)
    if isinstance(fn, types.BuiltinFunctionType):
        owner = getattr(fn, "__self__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            return fn  # a module's: it lives as long as its module
    return None


class _Weak:
    """A key that refers to a function without keeping it alive."""

    __slots__ = ("_hash", "ref")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.ref = weakref.ref(fn)
        self._hash = id(fn)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _Weak) and self.ref() is not None
                and self.ref() is other.ref())

    def dead(self) -> bool:
        return self.ref() is None
