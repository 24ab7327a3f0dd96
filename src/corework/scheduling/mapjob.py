"""One ``map``/``imap`` call: feed chunks in lazily, hand results out in order or as done.

The input is read in the caller's thread, a chunk at a time, and only while fewer than
``window`` chunks are out and not yet handed back. So a map over ten million items holds a
few chunks in memory, never the whole input, and a slow first task cannot make the
reorder buffer grow without bound.

What a failed task does to the iteration is the ``errors`` mode: ``"raise"`` (its
exception is raised at its place and the map is over), ``"return"`` (the exception takes
its place among the results and the map goes on) or ``"outcome"`` (every item as an
:class:`~corework.scheduling.outcomes.Outcome`).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

from .._errors import SerializationError
from ..engines import CallKind, ChunkReport
from .chunk import Chunk
from .chunk_sizes import ChunkSizer
from .outcomes import Outcome, task_exception
from .policy import TaskPolicy
from .scheduler import Scheduler

Errors = Literal["raise", "return", "outcome"]
ERRORS = ("raise", "return", "outcome")


def parse_errors(errors: str) -> Errors:
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {', '.join(map(repr, ERRORS))}, "
                         f"not {errors!r}")
    return errors  # type: ignore[return-value]


#: Chunks a map keeps out (queued, running, or done but not yet handed back) per worker.
WINDOW_PER_WORKER = 4


#: Longest a caller's wait is blocked in one go. A signal (Ctrl-C) that lands on another
#: thread cannot wake a blocked lock wait, so the main thread looks up this often.
SIGNAL_CHECK_SECONDS = 0.1


def _for_at_most(seconds: float | None) -> float:
    return SIGNAL_CHECK_SECONDS if seconds is None else min(seconds, SIGNAL_CHECK_SECONDS)


class _Input:
    """Takes the next ``n`` items of the input, slicing where the input allows it."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.total: int | None = None
        self._sequence: Sequence[Any] | None = None
        self._iterator: Iterator[Any] | None = None
        self._position = 0
        if isinstance(iterable, (range, list, tuple)):
            self._sequence = iterable  # slices are cheap; a range slice pickles as a range
            self.total = len(iterable)
        else:
            self._iterator = iter(iterable)

    def take(self, n: int) -> Sequence[Any]:
        if self._sequence is not None:
            start = self._position
            self._position = min(start + n, len(self._sequence))
            return self._sequence[start:self._position]
        assert self._iterator is not None
        return list(itertools.islice(self._iterator, n))


class MapJob:
    """Runs ``fn`` over an input through a :class:`Scheduler`; iterate it for results."""

    def __init__(self, scheduler: Scheduler, fn: Callable[..., Any], iterable: Iterable[Any], *,
                 kind: CallKind = CallKind.ARG, chunksize: int | None = None,
                 ordered: bool = True, window: int | None = None,
                 deadline: float | None = None, policy: TaskPolicy | None = None,
                 errors: Errors = "raise") -> None:
        scheduler.dispatch.check_open()
        self._scheduler = scheduler
        self._fn = scheduler.function(fn)
        self._kind = kind
        self._input = _Input(iterable)
        self._policy = policy or scheduler.policy
        self._sizer = ChunkSizer(scheduler.slots, self._input.total, chunksize,
                                 task_timeout=self._policy.timeout,
                                 most=scheduler.max_tasks_per_worker)
        self._ordered = ordered
        self._errors = errors
        self._fixed_window = window
        self._deadline = deadline  # time.monotonic() by which every result must be in
        self._changed = threading.Condition()
        self._out: deque[Chunk] = deque()  # in input order
        self._finished: dict[int, ChunkReport | BaseException] = {}  # by chunk id
        self._finish_order: deque[Chunk] = deque()
        self._next_index = 0
        self._exhausted = False
        self._cancelled = False

    # --------------------------------------------------------------- caller's side

    @property
    def _window(self) -> int:
        """Chunks out at most: a few per slot (the pool may grow while the map runs)."""
        if self._fixed_window is not None:
            return self._fixed_window
        return WINDOW_PER_WORKER * self._scheduler.slots

    def fill(self) -> None:
        """Read input and queue chunks until the window is full or the input ends.

        Over a list, tuple or range every item exists before this runs and no code of the
        caller's runs while it does, so it is one sending pass for the engine (a buffer in
        several chunks is copied once and not compared again); a generator's next item
        may rewrite the last one, so there each chunk is packed on its own.
        """
        if self._input.total is None:
            self._fill()
            return
        with self._scheduler.engine.sending_pass():
            self._fill()

    def _fill(self) -> None:
        while not self._exhausted and len(self._out) < self._window:
            items = self._input.take(self._sizer.next_size())
            if not items:
                self._exhausted = True
                return
            first = self._next_index
            self._next_index += len(items)
            try:
                chunk = self._scheduler.make_chunk(self._fn, self._kind, items, first, self,
                                                   policy=self._policy)
            except SerializationError:
                if self._errors == "raise":
                    raise
                self._unsendable(items, first)  # failed in place; the map goes on
                continue
            self._out.append(chunk)
            self._scheduler.dispatch.enqueue(chunk)

    def _unsendable(self, items: Sequence[Any], first: int) -> None:
        """Items that could not be pickled, in a mode that reports failures in place: each
        is sent alone, and those that still cannot go fail at once with the reason."""
        for position, item in enumerate(items):
            try:
                chunk = self._scheduler.make_chunk(self._fn, self._kind, [item],
                                                   first + position, self, policy=self._policy)
            except SerializationError as exc:
                work = self._scheduler.make_chunk.unsent(self._fn, self._kind, [item],
                                                         first + position)
                chunk = Chunk(work, self, self._policy)
                self._out.append(chunk)
                self._finish(chunk, exc)
                continue
            self._out.append(chunk)
            self._scheduler.dispatch.enqueue(chunk)

    def __iter__(self) -> Iterator[Any]:
        """Every result, one at a time; a result handed out is no longer held here (so
        the caller's ``del`` frees it: no stale reference)."""
        for values in self.chunks():
            values.reverse()
            while values:
                yield values.pop()

    def chunks(self) -> Iterator[list[Any]]:
        """Each chunk's results as a list, in input order or as finished, as ``errors``
        says: with ``"raise"`` a failed task raises at its place (the results before it
        in its chunk come first). Leaving the iteration early cancels the chunks that
        have not started.
        """
        try:
            for chunk, outcome in self._finished_chunks():
                values, error = self._values(chunk, outcome)
                del chunk, outcome  # only the values are held while they are handed out
                if values:
                    yield values
                if error is not None:
                    raise self._scheduler.translate(error)
        finally:
            self.cancel()

    def _values(self, chunk: Chunk, outcome: ChunkReport | BaseException
                ) -> tuple[list[Any], BaseException | None]:
        """A finished chunk's values as ``errors`` says, and the failure to raise after
        them (``"raise"`` only)."""
        if self._errors == "outcome":
            return _outcomes(chunk, outcome), None
        if self._errors == "return":
            return _in_place(chunk, outcome), None
        return _up_to_failure(chunk, outcome)

    def _take_ready(self) -> tuple[Chunk, ChunkReport | BaseException] | None:
        """The next chunk to hand out and its outcome, if it has finished (lock held)."""
        if self._ordered:
            head = self._out[0]
            chunk = head if head.work.id in self._finished else None
        else:
            chunk = self._finish_order.popleft() if self._finish_order else None
        if chunk is None:
            return None
        self._out.remove(chunk)
        return chunk, self._finished.pop(chunk.work.id)

    def _finished_chunks(self) -> Iterator[tuple[Chunk, ChunkReport | BaseException]]:
        """Each chunk to hand out, with its outcome, as it is its turn (waiting for it)."""
        while True:
            self.fill()
            if not self._out:
                return
            with self._changed:
                while (ready := self._take_ready()) is None:
                    self._changed.wait(_for_at_most(_time_left(self._deadline)))
            yield ready

    def cancel(self) -> None:
        """Drop the chunks that have not started (running ones finish unseen)."""
        self._cancelled = True

    # --------------------------------------------------------------- scheduler's side

    def claim(self, chunk: Chunk) -> bool:
        return not self._cancelled

    def wanted(self) -> bool:
        return not self._cancelled

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        self._sizer.observe(len(report.results), report.seconds)
        self._finish(chunk, report)

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        self._finish(chunk, error)

    def _finish(self, chunk: Chunk, outcome: ChunkReport | BaseException) -> None:
        with self._changed:
            self._finished[chunk.work.id] = outcome
            if not self._ordered:
                self._finish_order.append(chunk)
            self._changed.notify()


def _time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no deadline); TimeoutError once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise concurrent.futures.TimeoutError("map() results were not ready in time")
    return left


def _up_to_failure(chunk: Chunk, outcome: ChunkReport | BaseException
                   ) -> tuple[list[Any], BaseException | None]:
    """The chunk's results up to its first failure, and that failure's exception."""
    if isinstance(outcome, BaseException):
        return [], chunk.blame(outcome)
    if outcome.error is not None:
        return [], task_exception(outcome.error, chunk.describe(0), outcome.remote)
    if not outcome.failures:
        return outcome.results, None
    first = min(outcome.failures)
    error = task_exception(outcome.failures[first], chunk.describe(first), outcome.remote)
    return outcome.results[:first], error


def _in_place(chunk: Chunk, outcome: ChunkReport | BaseException) -> list[Any]:
    """A finished chunk's values, with each failed task's exception in its place."""
    if isinstance(outcome, ChunkReport) and outcome.error is None and not outcome.failures:
        return outcome.results  # the common case: nothing to look at per item
    return [o.value if o.error is None else o.error for o in _outcomes(chunk, outcome)]


def _outcomes(chunk: Chunk, outcome: ChunkReport | BaseException) -> list[Outcome[Any]]:
    """One :class:`Outcome` per task of a finished chunk."""
    if isinstance(outcome, BaseException):
        error = chunk.blame(outcome)
        attempts = getattr(outcome, "attempts", chunk.attempt)
        return [Outcome(chunk.first + p, error=error, attempts=attempts)
                for p in range(chunk.size)]
    if outcome.error is not None:
        return [Outcome(chunk.first + p, attempts=chunk.attempt,
                        error=task_exception(outcome.error, chunk.describe(p), outcome.remote))
                for p in range(chunk.size)]
    outcomes = []
    for position, value in enumerate(outcome.results):
        failure = outcome.failures.get(position)
        raised = (None if failure is None else
                  task_exception(failure, chunk.describe(position), outcome.remote))
        attempts = getattr(raised, "attempts", None) or outcome.attempts.get(position,
                                                                             chunk.attempt)
        outcomes.append(Outcome(chunk.first + position, value, raised, attempts))
    return outcomes
