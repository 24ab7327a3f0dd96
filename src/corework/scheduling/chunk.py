"""A chunk: consecutive tasks of one submission, run together on one slot."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .._errors import describe_task, short_repr
from ..engines import CallKind, ChunkReport, ChunkWork
from .policy import NO_LIMITS, TaskPolicy


class ChunkSink(Protocol):
    """Where a chunk's outcome goes: a single task's Future, or a map's collector."""

    def claim(self, chunk: Chunk) -> bool:
        """About to run: False if it was cancelled meanwhile (then it is dropped)."""

    def wanted(self) -> bool:
        """Whether the outcome still matters (a re-run of part of the chunk may be skipped)."""

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        """The chunk ran; some of its tasks may have failed."""

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        """None of the chunk's tasks can have a result (worker lost, timeout, pool broken)."""


@dataclass(eq=False)
class Chunk:
    """Consecutive tasks of one submission, with the policy they run under."""

    work: ChunkWork  # with ``first``, the submission's index of the chunk's first task
    sink: ChunkSink
    policy: TaskPolicy = NO_LIMITS
    attempt: int = 1  # of every task in it
    alone: bool = False  # a suspect: it runs in a worker process with nothing else in it
    claimed: bool = False  # its sink has agreed to run it (claim() is asked once)

    @property
    def size(self) -> int:
        return len(self.work.items)

    @property
    def first(self) -> int:
        """The submission's index of the chunk's first task."""
        return self.work.first

    def describe(self, position: int) -> str:
        """Name the task at ``position`` in this chunk, for error messages."""
        item = self.work.items[position]
        if self.work.kind is CallKind.CALL:
            where = f"the call {describe_call(self.work.fn.fn, item)}"
        else:
            where = describe_task(self.first + position, item, has_item=True)
        if self.attempt > 1:
            where += f", attempt {self.attempt} of {self.policy.retries + 1}"
        return where

    def blame(self, error: BaseException) -> BaseException:
        """A copy of ``error`` (shared by several chunks) with a note naming these tasks."""
        where = (self.describe(0) if self.size == 1 else
                 f"tasks {self.first}-{self.first + self.size - 1} (run together as one chunk)")
        blamed = copy.copy(error)
        notes = [*getattr(error, "__notes__", []), f"while running {where}"]
        blamed.__notes__ = notes  # type: ignore[attr-defined]  # a new list, not the shared one
        return blamed


def describe_call(fn: Callable[..., Any], item: tuple[tuple[Any, ...], dict[str, Any]]) -> str:
    """``name(arg, key=value)`` with short reprs."""
    args, kwargs = item
    name = getattr(fn, "__qualname__", None) or repr(fn)
    shown = [short_repr(arg) for arg in args]
    shown += [f"{key}={short_repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"
