"""The keyword options of ``cw.map``, ``cw.imap`` and ``cw.Pool``, each written once: its
type (the TypedDicts below, which type checkers read through ``Unpack``), its default
(:data:`DEFAULTS`), and so the signature ``help()`` shows (:func:`signed`). A call's
options are checked against its TypedDict's names (:func:`options_of`), so a misspelt one
is refused as Python would refuse it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ForwardRef, Literal, TypedDict, TypeVar

from ..scheduling.mapjob import Errors

__all__ = ["DEFAULTS", "MapKeywords", "PoolKeywords", "names_of", "options_of", "signed"]

F = TypeVar("F", bound=Callable[..., Any])


class RunKeywords(TypedDict, total=False):
    """Where the tasks run, and what each task may take (a map's and a pool's alike)."""

    engine: str
    timeout: float | None
    retries: int
    backoff: float
    retry_on: Iterable[type[BaseException]]
    address: str | None


class MapKeywords(RunKeywords, total=False):
    """``cw.map``'s and ``cw.imap``'s keywords."""

    workers: int | None
    chunksize: int | Literal["auto"]
    ordered: bool
    errors: Errors
    progress: object


class PoolKeywords(RunKeywords, total=False):
    """``cw.Pool``'s keywords."""

    memory_limit: int | str | None
    max_tasks_per_worker: int | None
    initializer: Callable[..., object] | None
    initargs: Iterable[Any]
    start_method: str | None
    native_threads: int | Literal["auto"] | None
    threads: int | None
    relay_logs: bool


#: Every option's default, whichever call takes it.
DEFAULTS: dict[str, Any] = {
    "engine": "auto", "timeout": None, "retries": 0, "backoff": 0.0, "retry_on": (),
    "address": None, "workers": None, "chunksize": "auto", "ordered": True,
    "errors": "raise", "progress": False, "memory_limit": None, "max_tasks_per_worker": None,
    "initializer": None, "initargs": (), "start_method": None, "native_threads": "auto",
    "threads": None, "relay_logs": True,
}


def names_of(keywords: type) -> list[str]:
    """The option names of a TypedDict, bases' first, in the order they are written."""
    return list(keywords.__annotations__)


def options_of(call: str, keywords: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``call``: those ``given``, the defaults for the rest. A name the
    call does not take is a TypeError, worded as Python words one."""
    names = names_of(keywords)
    for name in given:
        if name not in names:
            raise TypeError(f"{call}() got an unexpected keyword argument {name!r}")
    return {name: given.get(name, DEFAULTS[name]) for name in names}


def _shown(annotation: object) -> object:
    """An option's type as written (TypedDict keeps a string as a ForwardRef)."""
    return annotation.__forward_arg__ if isinstance(annotation, ForwardRef) else annotation


def signed(keywords: type) -> Callable[[F], F]:
    """Give a function taking ``**options: Unpack[keywords]`` the signature that lists
    each option with its default, for ``help()`` and ``inspect.signature``."""
    def sign(fn: F) -> F:
        signature = inspect.signature(fn)
        kept = [p for p in signature.parameters.values()
                if p.kind is not p.VAR_KEYWORD and not p.name.startswith("_")]
        options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                     default=DEFAULTS[name], annotation=_shown(annotation))
                   for name, annotation in keywords.__annotations__.items()]
        fn.__signature__ = signature.replace(parameters=[*kept, *options])  # type: ignore[attr-defined]
        return fn
    return sign
