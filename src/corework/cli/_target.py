"""Finding ``corework run``'s TARGET (``package.module:function`` or ``file.py:function``)
and naming it, so a journal can tell whether it is still the same function."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

__all__ = ["TargetError", "check_picklable", "function_identity", "load_target"]


class TargetError(Exception):
    """The target cannot be used (the message says why, in one line)."""


def load_target(target: str) -> Callable[..., Any]:
    """The callable ``target`` names.

    A module is imported with the current directory on ``sys.path`` (as ``python -m``
    does). A file is loaded with its own directory on ``sys.path`` (as ``python file.py``
    does), and its functions travel to workers by value, so any start method works.
    """
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise TargetError(f"target {target!r} must be package.module:function or "
                          f"path/to/file.py:function")
    module = _load_file(where) if where.endswith(".py") or os.sep in where else _import(where)
    fn: Any = module
    for part in name.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise TargetError(f"{where!r} has no {name!r}") from None
    if not callable(fn):
        raise TargetError(f"{target!r} is {_a(type(fn).__name__)}, not a function")
    return fn  # type: ignore[no-any-return]


def _import(name: str) -> types.ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise TargetError(f"no module named {exc.name!r} (looked in the current "
                              f"directory and on sys.path)") from None
        raise TargetError(f"cannot import {name!r}: {_one_line(exc)}") from None
    except Exception as exc:
        raise TargetError(f"cannot import {name!r}: {_one_line(exc)}") from None


def _load_file(where: str) -> types.ModuleType:
    """Import ``where`` as the module named by its file name, with its directory first on
    ``sys.path`` (so workers import it by name too, and tracebacks show its lines). If
    that name is taken by another module, it is loaded under a name of its own and its
    functions travel to workers by value."""
    path = Path(where).resolve()
    if not path.is_file():
        raise TargetError(f"no such file: {where!r}")
    sys.path.insert(0, str(path.parent))
    taken = sys.modules.get(path.stem)
    if taken is None or Path(getattr(taken, "__file__", "") or "").resolve() == path:
        return _import(path.stem)
    name = f"corework_run_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {where!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise TargetError(f"cannot load {where!r}: {_one_line(exc)}") from None
    cloudpickle.register_pickle_by_value(module)
    return module


def check_picklable(fn: Callable[..., Any], target: str) -> None:
    """Refuse a function that cannot be sent to a worker process."""
    try:
        cloudpickle.dumps(fn)
    except Exception as exc:
        raise TargetError(f"{target!r} cannot be sent to worker processes "
                          f"({_one_line(exc)}); try --engine thread") from None


def function_identity(fn: Callable[..., Any]) -> str:
    """``qualname sha256:...`` of the function's bytecode, constants and names.

    Line numbers and the file's path are left out, so moving the file or editing
    comments keeps the identity; changing what the function itself does changes it.
    (Functions it calls are not covered.) A callable without code (a builtin, a class
    instance) is named by its qualified name alone.
    """
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return name
    digest = hashlib.sha256()
    _hash_code(code, digest)
    return f"{name} sha256:{digest.hexdigest()[:32]}"


def _hash_code(code: types.CodeType, digest: Any) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, digest)
        else:
            digest.update(repr(const).encode())


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()
    return text[0] if text else type(exc).__name__


def _a(noun: str) -> str:
    """``noun`` with its article: "an int", "a str"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
