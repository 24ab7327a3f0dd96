"""Which corework class stands in for which ``concurrent.futures`` name, per engine."""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import corework.futures

ENGINES = ("process", "thread", "interpreter")
TESTS = "test.test_concurrent_futures"


def find_tests() -> ModuleSpec | None:
    """Where the interpreter's own ``test.test_concurrent_futures`` is, or None if this
    distribution lacks it. Found without importing it: the swap must come first."""
    try:
        return importlib.util.find_spec(TESTS)
    except ImportError:  # no ``test`` package at all
        return None


def util_module() -> ModuleType:
    """Where the mixins live: ``util`` in the package (3.11+), the module itself before."""
    spec = find_tests()
    if spec is not None and spec.submodule_search_locations is not None:
        return importlib.import_module(f"{TESTS}.util")
    return importlib.import_module(TESTS)


def has_interpreter_pool_tests() -> bool:
    """Whether CPython's tests include the interpreter-pool ones (3.14+)."""
    spec = find_tests()
    return spec is not None and any(
        (Path(folder) / "test_interpreter_pool.py").exists()
        for folder in spec.submodule_search_locations or ())


def replacements(engine: str) -> dict[str, str]:
    """``concurrent.futures`` attribute -> name of the corework.futures class to put there.

    Every run swaps every executor (a thread-pool test that also starts a process pool
    gets corework's). For sub-interpreters without CPython's interpreter-pool tests, the
    thread-pool tests run on corework's InterpreterPoolExecutor.
    """
    names = {"ProcessPoolExecutor": "ProcessPoolExecutor",
             "ThreadPoolExecutor": "ThreadPoolExecutor"}
    if hasattr(corework.futures, "InterpreterPoolExecutor"):
        names["InterpreterPoolExecutor"] = "InterpreterPoolExecutor"
        if engine == "interpreter" and not has_interpreter_pool_tests():
            names["ThreadPoolExecutor"] = "InterpreterPoolExecutor"
    return names


def install(engine: str) -> None:
    """Put corework's classes into ``concurrent.futures`` (before the tests are imported)."""
    for attribute, name in replacements(engine).items():
        setattr(concurrent.futures, attribute, getattr(corework.futures, name))


def prelude(engine: str) -> str:
    """The same swap as the first lines of a ``python -c`` script."""
    lines = ["import concurrent.futures as _cf_swap, corework.futures as _cw_swap"]
    lines += [f"_cf_swap.{attribute} = _cw_swap.{name}"
              for attribute, name in replacements(engine).items()]
    return "\n".join(lines) + "\n"
