"""``corework.futures.ThreadPoolExecutor``: the standard library's, on corework's thread
engine."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import itertools
import sys
from collections.abc import Callable
from typing import Any

from ._executor import Executor, check_initializer, check_max_workers, cpu_count


class ThreadPoolExecutor(Executor, concurrent.futures.thread.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor``, on corework's thread engine.

    ``max_workers`` defaults to ``min(32, CPU count + 4)`` and threads are named
    ``{thread_name_prefix}_{n}``, as in the standard library. An instance of
    ``concurrent.futures.ThreadPoolExecutor``, so ``loop.set_default_executor`` takes it.
    """

    _counter = itertools.count().__next__

    if sys.version_info >= (3, 14):  # pragma: no cover - exercised on Python 3.14
        def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = (), **ctxkwargs: Any) -> None:
            self._configure(max_workers, thread_name_prefix, initializer, initargs,
                            ctxkwargs)
    else:
        def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = ()) -> None:
            self._configure(max_workers, thread_name_prefix, initializer, initargs, {})

    def _configure(self, max_workers: int | None, thread_name_prefix: str,
                   initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
                   ctxkwargs: dict[str, Any]) -> None:
        workers = check_max_workers(max_workers, min(32, cpu_count() + 4))
        if ctxkwargs:  # 3.14: for a subclass's prepare_context(); a thread's takes none
            raise TypeError(f"{type(self).__name__}.prepare_context() got an unexpected "
                            f"keyword argument {next(iter(ctxkwargs))!r}")
        check_initializer(initializer)
        self._thread_name_prefix = (thread_name_prefix
                                    or f"{type(self).__name__}-{self._counter()}")
        self._start(workers, self._engine(), initializer, initargs,
                    thread_names=self._names())

    def _engine(self) -> str:
        return "thread"

    def _names(self) -> str | None:
        return self._thread_name_prefix


