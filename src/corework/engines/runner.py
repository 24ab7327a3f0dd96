"""Running one chunk of calls inside a worker: shared by every engine's workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..transport.failure import Failure
from .contract import CallKind, ChunkReport

#: What the current thread runs: ``chunk`` is (chunk id, its results so far) while a
#: chunk runs — the task running is the one at ``len(results)`` — for the log relay.
current = threading.local()


class Interrupt(BaseException):
    """Raised into a thread that runs tasks to stop it (``kill``, a timeout); the one
    exception a chunk lets through. Never escapes an engine."""


def run_chunk(
    chunk_id: int, fn: Callable[..., Any], kind: CallKind, items: Sequence[Any]
) -> ChunkReport:
    """Call ``fn`` on every item; a failing call fails only its own item.

    Whatever a call raises — ``SystemExit``, ``KeyboardInterrupt`` and ``GeneratorExit``
    included — is that task's failure: the thread running the chunk goes on.
    """
    started = time.perf_counter()
    results: list[Any] = []
    failures: dict[int, Failure | BaseException] = {}
    current.chunk = (chunk_id, results)
    try:
        if kind is CallKind.ARG:
            _run_args(fn, items, results, failures)
        else:
            _run_calls(fn, kind, items, results, failures)
    finally:
        current.chunk = None
    return ChunkReport(chunk_id, results, failures, time.perf_counter() - started)


def _run_calls(fn: Callable[..., Any], kind: CallKind, items: Sequence[Any],
               results: list[Any], failures: dict[int, Failure | BaseException]) -> None:
    for position, item in enumerate(items):
        try:
            results.append(call_one(fn, kind, item))
        except Interrupt:
            raise
        except BaseException as exc:
            results.append(None)
            failures[position] = Failure.capture(exc, skip=2)


def call_one(fn: Any, kind: CallKind, item: Any) -> Any:
    """Call ``fn`` on one chunk item the way ``kind`` says."""
    if kind is CallKind.ARG:
        return fn(item)
    if kind is CallKind.STAR:
        return fn(*item)
    args, kwargs = item
    return fn(*args, **kwargs)


def _run_args(
    fn: Callable[..., Any],
    items: Sequence[Any],
    results: list[Any],
    failures: dict[int, Failure | BaseException],
) -> None:
    """The hot loop of ``map``: ``list.extend(map(fn, ...))`` runs in C; a call that raises
    leaves the results before it in place, and the loop resumes after it."""
    remaining = iter(items)
    while True:
        try:
            results.extend(map(fn, remaining))
            return
        except Interrupt:
            raise
        except BaseException as exc:
            failures[len(results)] = Failure.capture(exc, skip=1)
            results.append(None)
