"""The scheduler's own promises: tiny tasks are batched, long ones go singly, and a task
function is sent to each worker once, not once per task."""

from __future__ import annotations

import threading

import pytest

import corework as cw
from corework.engines import ChunkWork, WorkerSetup
from corework.engines.local.thread import ThreadEngine
from corework.scheduling.chunk_sizes import ChunkSizer
from corework.scheduling.mapjob import MapJob
from corework.scheduling.scheduler import Scheduler
from tests.helpers import square


class CountingThreadEngine(ThreadEngine):
    """A real thread engine that counts the chunks it is sent."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers, WorkerSetup())
        self.sizes: list[int] = []
        self._count_lock = threading.Lock()

    def send(self, slot: int, work: ChunkWork) -> None:
        with self._count_lock:
            self.sizes.append(len(work.items))
        super().send(slot, work)


def _run_map(items, **options):
    engine = CountingThreadEngine(2)
    scheduler = Scheduler(engine)
    try:
        results = list(MapJob(scheduler, square, items, **options))
    finally:
        scheduler.shutdown()
    return results, engine.sizes


def test_tiny_tasks_are_batched_into_few_chunks():
    results, sizes = _run_map(range(100_000))
    assert results == [x * x for x in range(100_000)]
    assert sum(sizes) == 100_000
    assert len(sizes) < 200, f"{len(sizes)} chunks for 100,000 tiny tasks"


def test_an_explicit_chunksize_is_honoured():
    _, sizes = _run_map(range(100), chunksize=7)
    assert sizes == [7] * 14 + [2]


def test_sizer_sends_long_tasks_one_by_one():
    sizer = ChunkSizer(workers=2, total=1000)
    assert sizer.next_size() == 1  # nothing measured yet
    sizer.observe(tasks=1, seconds=0.5)
    assert sizer.next_size() == 1


def test_sizer_batches_tiny_tasks_but_keeps_every_worker_busy():
    sizer = ChunkSizer(workers=2, total=100_000)
    sizer.observe(tasks=1000, seconds=0.0001)
    assert sizer.next_size() == 100_000 // (2 * 4)  # capped for load balance


def test_sizer_with_unknown_length_aims_at_the_target_duration():
    sizer = ChunkSizer(workers=2, total=None)
    sizer.observe(tasks=100, seconds=0.1)  # 1 ms per task
    assert sizer.next_size() == 10


class CountsItsUnpickling:
    """A callable that counts, per process, how often it was unpickled."""

    loads = 0

    def __reduce__(self):
        return (_rebuild_counter, ())

    def __call__(self, _):
        return CountsItsUnpickling.loads


def _rebuild_counter():
    CountsItsUnpickling.loads += 1
    return CountsItsUnpickling()


@pytest.mark.parametrize("chunksize", [1, "auto"])
def test_the_function_reaches_each_worker_once(chunksize):
    with cw.Pool(2, engine="process") as pool:
        counts = list(pool.imap(CountsItsUnpickling(), range(200), chunksize=chunksize))
    assert set(counts) == {1}


def test_submit_sends_a_function_once_per_worker():
    """The closure's list is rebuilt on every unpickling; if ``fn`` reached the worker
    once, its one copy of the list keeps growing."""
    calls = []

    def count():
        calls.append(1)
        return len(calls)

    with cw.Pool(1, engine="process") as pool:
        assert [pool.submit(count).result() for _ in range(20)] == list(range(1, 21))
    assert calls == []  # it ran in the worker, not here


def test_sizer_is_not_fooled_by_a_first_one_task_chunk():
    """One task's chunk mostly measures overhead; a large chunk soon outweighs it."""
    sizer = ChunkSizer(workers=2, total=None)
    sizer.observe(tasks=1, seconds=0.00001)  # 10 µs: overhead, not the task
    sizer.observe(tasks=1000, seconds=0.0001)  # 0.1 µs per task
    assert sizer.next_size() >= 50_000
