"""The key of the scheduler's cache of pickled functions: it changes whenever a function
would pickle differently because a ``__main__`` name it uses was rebound (by-value pickling
captures those globals, so this knowledge stands beside the picklers)."""

from __future__ import annotations

import types
from typing import Any

__all__ = ["sent_as"]


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
