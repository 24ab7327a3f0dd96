"""Re-running part of a chunk without its owner noticing.

When a chunk's worker crashes or times out, nobody knows which of its tasks was to blame,
so each task is run again alone; a task whose exception is worth a retry is run again too.
An :class:`Assembly` waits for those parts and then hands the chunk's sink one whole
report, as if the chunk had simply run — so ordering and delivery stay the sink's
business and retries stay the scheduler's.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from ..engines import ChunkReport
from ..transport.failure import Failure
from .chunk import Chunk
from .outcomes import task_exception


class Assembly:
    """A chunk waiting for some of its tasks (``rerun`` positions) to be run again."""

    def __init__(self, chunk: Chunk, report: ChunkReport | None,
                 rerun: Collection[int]) -> None:
        self.chunk = chunk
        self._lock = threading.Lock()
        self._waiting = set(rerun)
        self._attempts: dict[int, int] = {}
        if report is None:
            self._results: list[Any] = [None] * chunk.size
            self._failures: dict[int, Failure | BaseException] = {}
            self._seconds, self._remote = 0.0, False
        else:
            self._results = list(report.results)
            self._failures = {p: f for p, f in report.failures.items() if p not in rerun}
            self._seconds, self._remote = report.seconds, report.remote

    def sink_for(self, position: int) -> PartSink:
        return PartSink(self, position)

    def record(self, position: int, value: Any = None,
               failure: Failure | BaseException | None = None, attempts: int = 1) -> None:
        """Part ``position`` is done (after ``attempts`` runs); the last one delivers the
        whole chunk."""
        with self._lock:
            self._results[position] = value
            if attempts > 1:
                self._attempts[position] = attempts
            if failure is not None:
                self._failures[position] = failure
            self._waiting.discard(position)
            if self._waiting:
                return
        report = ChunkReport(self.chunk.work.id, self._results, self._failures,
                             self._seconds, None, self._remote, self._attempts)
        self.chunk.sink.deliver(self.chunk, report)


class PartSink:
    """The sink of one re-run task: it reports to its :class:`Assembly`."""

    def __init__(self, assembly: Assembly, position: int) -> None:
        self.assembly = assembly
        self.position = position

    def claim(self, chunk: Chunk) -> bool:
        return self.wanted()

    def wanted(self) -> bool:
        return self.assembly.chunk.sink.wanted()

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        failure = report.error or report.failures.get(0)
        if failure is None:
            self.assembly.record(self.position, report.results[0], attempts=chunk.attempt)
        elif isinstance(failure, Failure):  # named here, where the attempt count is known
            error = task_exception(failure, chunk.describe(0), report.remote)
            self.assembly.record(self.position, failure=error, attempts=chunk.attempt)
        else:
            self.assembly.record(self.position, failure=failure, attempts=chunk.attempt)

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        self.assembly.record(self.position, failure=chunk.blame(error), attempts=chunk.attempt)


def owner(sink: Any) -> Any:
    """The sink that owns a chunk in the end: through any parts, the original chunk's."""
    while isinstance(sink, PartSink):
        sink = sink.assembly.chunk.sink
    return sink
