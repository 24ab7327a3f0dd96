"""Running one chunk of calls inside a worker: shared by every engine's workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .._transport import CallKind, Failure, call_one
from ._base import ChunkReport


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
    if kind is CallKind.ARG:
        _run_args(fn, items, results, failures)
    else:
        for position, item in enumerate(items):
            try:
                results.append(call_one(fn, kind, item))
            except Interrupt:
                raise
            except BaseException as exc:
                results.append(None)
                failures[position] = Failure.capture(exc, skip=2)
    return ChunkReport(chunk_id, results, failures, time.perf_counter() - started)


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
