"""Adaptive chunk sizes: batch tiny tasks until overhead vanishes; send long ones singly.

The first chunks of a map hold one task each, until a worker reports how long its tasks
take. From then on each chunk holds about ``TARGET_SECONDS`` of work, but never so much
that a known-length input would be split into fewer than ``CHUNKS_PER_WORKER`` chunks per
worker (which would leave workers idle at the end).
"""

from __future__ import annotations

import math

#: Work per chunk. Larger amortises per-message cost; smaller balances load and keeps
#: timeouts and cancellation close to per task.
TARGET_SECONDS = 0.01
#: Lower bound on chunks per worker for inputs of known length, for load balance.
CHUNKS_PER_WORKER = 4
#: Upper bound on tasks per chunk when the input's length is unknown.
MAX_CHUNK = 100_000
#: With a per-task timeout, a chunk aims at no more than this fraction of it.
TIMEOUT_SHARE = 20
#: How much of the past a new measurement leaves in the per-task estimate.
FADING = 0.8


class ChunkSizer:
    """Decides how many tasks the next chunk of one map gets."""

    def __init__(self, workers: int, total: int | None, fixed: int | None = None, *,
                 task_timeout: float | None = None, most: int | None = None) -> None:
        self._fixed = fixed
        # With a per-task timeout, a chunk should take a small part of it: when a chunk
        # overruns, each of its tasks is re-run alone before one can be blamed.
        self._target = TARGET_SECONDS
        if task_timeout is not None:
            self._target = min(TARGET_SECONDS, task_timeout / TIMEOUT_SHARE)
        self._cap = MAX_CHUNK
        if total is not None:
            self._cap = max(1, min(MAX_CHUNK, math.ceil(total / (workers * CHUNKS_PER_WORKER))))
        if most is not None:  # e.g. max_tasks_per_worker: a chunk never outlasts a worker
            self._cap = min(self._cap, most)
        self._seconds_per_task: float | None = None
        self._tasks = 0.0  # faded sums of the chunks measured so far
        self._seconds = 0.0

    def next_size(self) -> int:
        """Tasks for the next chunk."""
        if self._fixed is not None:
            return self._fixed
        if self._seconds_per_task is None:
            return 1
        if self._seconds_per_task <= 0:
            return self._cap
        return max(1, min(self._cap, int(self._target / self._seconds_per_task)))

    def observe(self, tasks: int, seconds: float) -> None:
        """A chunk of ``tasks`` tasks took ``seconds`` to run in its worker.

        The estimate weighs each chunk by its number of tasks (a first chunk of one task
        mostly measures overhead; a chunk of thousands measures the tasks), and lets old
        chunks fade so that it follows tasks whose cost drifts.
        """
        if tasks <= 0:
            return
        self._tasks = self._tasks * FADING + tasks
        self._seconds = self._seconds * FADING + seconds
        self._seconds_per_task = self._seconds / self._tasks
