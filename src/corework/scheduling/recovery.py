"""What becomes of a chunk that ended badly: delivered as it is, re-run a task at a time
to find the culprit, run alone in a worker process of its own, retried after a backoff,
or failed with the error that ended it.

A chunk that loses its worker (crash, timeout, memory limit) is re-run a task at a time,
since nobody knows which task was to blame; a task that fails that way, or raises one of
``retry_on``, is run again up to ``retries`` times (see ``assembly``). Where slots share a
worker process (``threads=``) and it dies with several chunks in it, each of them is a
*suspect*: it is run again *alone* before it can be blamed; chunks merely stopped with a
process that was ended to stop another task are requeued as they were."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._errors import Cancelled, CoreworkError, WorkerCrashed
from ..engines import CallKind, ChunkReport, ChunkWork, FunctionRef
from ..transport.failure import Failure
from .assembly import Assembly, PartSink
from .chunk import Chunk, ChunkSink
from .dispatch import Dispatch
from .policy import TaskPolicy


class MakeChunk(Protocol):
    """A new chunk, its items packed for the engine (``Scheduler.make_chunk``)."""

    def __call__(self, fn: FunctionRef, kind: CallKind, items: Sequence[Any], first: int,
                 sink: ChunkSink, *, policy: TaskPolicy | None = None) -> Chunk: ...


class Recovery:
    """Decides a finished or lost chunk's fate; puts re-runs back through ``queue``."""

    def __init__(self, queue: Dispatch, make_chunk: MakeChunk,
                 new_id: Callable[[], int]) -> None:
        self._queue = queue
        self._make_chunk = make_chunk
        self._new_id = new_id

    def finished(self, chunk: Chunk, report: ChunkReport) -> None:
        """Deliver a finished chunk, first re-running the tasks whose exception warrants it."""
        if report.error is not None and chunk.size > 1:
            self._split(chunk)  # e.g. one argument could not be unpickled: find which
            return
        retry = [position for position, failure in report.failures.items()
                 if isinstance(failure, Failure) and chunk.attempt <= chunk.policy.retries
                 and chunk.policy.retries_failure(failure)]
        if not retry:
            chunk.sink.deliver(chunk, report)
        elif chunk.size == 1:
            self._retry(chunk)
        else:
            assembly = Assembly(chunk, report, retry)
            for position in retry:
                self._retry(self._part(chunk, assembly, position))

    def lost(self, chunk: Chunk, error: BaseException) -> None:
        """The chunk's worker died, timed out or was over its memory limit."""
        if isinstance(error, Cancelled) or not chunk.sink.wanted():
            chunk.sink.fail(chunk, error)
        elif isinstance(error, WorkerCrashed) and (not error.started or error.collateral):
            self._queue.requeue(chunk)  # it never reached the worker, or was a bystander
        elif isinstance(error, WorkerCrashed) and error.shared and not chunk.alone:
            self._isolate(chunk)  # one of the worker's chunks crashed it: which one?
        elif chunk.size > 1:
            self._split(chunk)
        elif chunk.attempt <= chunk.policy.retries and chunk.policy.retries_error(error):
            self._retry(chunk)
        else:
            chunk.sink.fail(chunk, with_attempts(error, chunk.attempt))

    def _split(self, chunk: Chunk) -> None:
        """Which of the chunk's tasks was to blame? Run each again, alone."""
        assembly = Assembly(chunk, None, range(chunk.size))
        for position in reversed(range(chunk.size)):  # requeued at the front: keep order
            self._queue.requeue(self._part(chunk, assembly, position))

    def _isolate(self, chunk: Chunk) -> None:
        """Run a suspect again in a worker process with nothing else in it (its tasks one
        by one): only a crash there blames it."""
        chunk.alone = True
        if chunk.size > 1:
            self._split(chunk)
        else:
            self._queue.requeue(chunk)

    def _part(self, chunk: Chunk, assembly: Assembly, position: int) -> Chunk:
        """Task ``position`` of ``chunk`` as a chunk of its own, reporting to ``assembly``."""
        items = chunk.work.items[position:position + 1]
        part = self._make_chunk(chunk.work.fn, chunk.work.kind, items,
                                      chunk.first + position, assembly.sink_for(position),
                                      policy=chunk.policy)
        part.attempt = chunk.attempt
        part.alone = chunk.alone
        return part

    def _retry(self, chunk: Chunk) -> None:
        """Run ``chunk`` (of one task) again, after its backoff delay. The retry reports
        to an Assembly, so the owner sees the original chunk settle, once."""
        sink = chunk.sink if isinstance(chunk.sink, PartSink) else Assembly(
            chunk, None, [0]).sink_for(0)
        work = ChunkWork(self._new_id(), chunk.work.fn, chunk.work.kind, chunk.work.items,
                         chunk.work.payload, chunk.first)
        retry = Chunk(work, sink, chunk.policy, chunk.attempt + 1, alone=chunk.alone)
        delay = chunk.policy.delay(chunk.attempt)
        if delay:
            self._queue.hold(retry, delay)
        else:
            self._queue.requeue(retry)


def with_attempts(error: BaseException, attempts: int) -> BaseException:
    """Record on a final error how many times its task was tried."""
    if isinstance(error, CoreworkError):
        error = copy.copy(error)
        error.attempts = attempts  # type: ignore[attr-defined]
    return error
