"""The scheduler's decisions alone — deadlines, retries with backoff, a chunk split after
a crash, suspects run alone, ordering, kill, shutdown — on a fake engine driven by the
test and a fake clock moved by hand. Nothing here sleeps or starts a worker; each test
takes milliseconds. (The same promises on real engines: test_faults.py and others.)"""

from __future__ import annotations

import pytest

import corework as cw
from corework.scheduling.mapjob import MapJob
from corework.scheduling.policy import TaskPolicy
from corework.scheduling.scheduler import Scheduler
from tests.fakes import BOUND, FakeClock, FakeEngine
from tests.helpers import square


@pytest.fixture
def clock():
    return FakeClock()


def _scheduler(engine, clock, **policy):
    scheduler = Scheduler(engine, TaskPolicy(**policy), clock=clock)
    engine.ready()
    return scheduler


def _flaky(failures):
    """A task that raises ConnectionError ``failures`` times, then returns "ok"."""
    calls = []

    def task():
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionError(f"attempt {len(calls)}")
        return "ok"
    return task


def test_a_task_past_its_deadline_is_killed_and_times_out(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock, timeout=2)
    future = scheduler.submit_call(square, (3,), {})
    clock.advance(1.9)
    assert engine.killed == [] and not future.done()
    clock.advance(0.2)
    assert engine.killed == [0]
    with pytest.raises(cw.TaskTimeout, match="timeout of 2 s"):
        future.result(timeout=BOUND)
    scheduler.terminate("test over")


def test_a_deadline_is_per_task_and_starts_when_the_task_does(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock, timeout=2)
    first = scheduler.submit_call(square, (1,), {})
    second = scheduler.submit_call(square, (2,), {})  # waits for the only slot
    clock.advance(1.5)
    engine.finish(0)  # the first ends in time; the second starts now, at 1.5
    assert first.result(timeout=BOUND) == 1
    clock.advance(1.5)  # 3.0 since submit, 1.5 since it started
    assert engine.killed == [] and not second.done()
    clock.advance(0.6)
    assert engine.killed == [0]
    assert isinstance(second.exception(timeout=BOUND), cw.TaskTimeout)
    scheduler.terminate("test over")


def test_retries_wait_out_an_exponential_backoff(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock, retries=2, backoff=1, retry_on=(ConnectionError,))
    future = scheduler.submit_call(_flaky(2), (), {})
    engine.finish(0)  # attempt 1 fails: attempt 2 waits 1 s
    assert 0 not in engine.running
    clock.advance(0.9)
    assert 0 not in engine.running
    clock.advance(0.1)
    engine.wait_for(lambda e: 0 in e.running)
    engine.finish(0)  # attempt 2 fails: attempt 3 waits 2 s
    clock.advance(1.5)
    assert 0 not in engine.running
    clock.advance(0.5)
    engine.wait_for(lambda e: 0 in e.running)
    engine.finish(0)
    assert future.result(timeout=BOUND) == "ok"
    assert len(engine.sent) == 3
    scheduler.shutdown()


def test_a_task_out_of_retries_fails_with_its_last_error(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock, retries=1, retry_on=(ConnectionError,))
    future = scheduler.submit_call(_flaky(5), (), {})
    engine.finish(0)
    engine.finish(0)  # no backoff: the retry was sent at once
    with pytest.raises(ConnectionError, match="attempt 2"):
        future.result(timeout=BOUND)
    scheduler.shutdown()


def test_a_crashed_chunk_is_rerun_task_by_task_and_only_the_culprit_fails(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock)
    job = MapJob(scheduler, square, [1, 2, 3, 4], chunksize=4, errors="outcome")
    job.fill()
    assert engine.sent == [(0, [1, 2, 3, 4])]
    engine.crash(0)
    engine.ready(0)  # the replacement worker: the chunk's tasks come back one by one
    for _ in range(2):
        engine.finish(0)
    engine.crash(0)  # the third task crashes it again: that one is to blame
    engine.ready(0)
    engine.finish(0)
    assert engine.sent[1:] == [(0, [1]), (0, [2]), (0, [3]), (0, [4])]
    outcomes = list(job)
    assert [o.value for o in outcomes if o.ok] == [1, 4, 16]
    assert isinstance(outcomes[2].error, cw.WorkerCrashed) and outcomes[2].index == 2
    scheduler.shutdown()


def test_a_task_that_never_reached_its_worker_is_rerun_uncharged(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock)  # retries=0: a charged crash would fail it
    future = scheduler.submit_call(square, (5,), {})
    engine.crash(0, started=False)
    engine.ready(0)
    engine.finish(0)
    assert future.result(timeout=BOUND) == 25
    scheduler.shutdown()


def test_suspects_of_a_shared_worker_each_run_alone(clock):
    engine = FakeEngine(slots=4, per_group=2)  # two worker processes of two threads
    scheduler = _scheduler(engine, clock)
    a, b = (scheduler.submit_call(square, (x,), {}) for x in (1, 2))  # slots 3 and 2
    c, d = (scheduler.submit_call(square, (x,), {}) for x in (3, 4))  # slots 1 and 0
    assert {slot for slot, _ in engine.sent} == {0, 1, 2, 3}
    for slot in (2, 3):  # the worker of group 1 dies with both in it: suspects
        engine.crash(slot, shared=True)
    engine.ready(2, 3)
    suspect, = engine.sent[4:]  # group 1 is empty: it runs one suspect, nothing beside it
    assert engine.group(suspect[0]) == 1 and len(_in_group(engine, 1)) == 1
    engine.finish(0)  # group 0 takes no suspect while another group is on them
    assert len(engine.sent) == 5
    engine.finish(suspect[0])
    other, = engine.sent[5:]  # then the other suspect, alone again
    assert other[1] != suspect[1] and len(_in_group(engine, engine.group(other[0]))) == 1
    for slot in list(engine.running):
        engine.finish(slot)
    assert [f.result(timeout=BOUND) for f in (a, b, c, d)] == [1, 4, 9, 16]
    scheduler.shutdown()


def _in_group(engine, group):
    return [slot for slot in engine.running if engine.group(slot) == group]


def test_a_map_hands_results_back_in_input_order(clock):
    engine = FakeEngine(slots=2)
    scheduler = _scheduler(engine, clock)
    job = MapJob(scheduler, square, range(6), chunksize=1, window=6)
    job.fill()
    while engine.running:
        engine.finish(max(engine.running))  # always the later slot first
    assert list(job) == [0, 1, 4, 9, 16, 25]
    scheduler.shutdown()


def test_kill_stops_a_running_task_and_a_queued_one_never_starts(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock)
    running = scheduler.submit_call(square, (1,), {})
    queued = scheduler.submit_call(square, (2,), {})
    assert queued.kill() and queued.cancelled()
    assert running.kill()
    assert engine.killed == [0]
    with pytest.raises(cw.Cancelled):
        running.result(timeout=BOUND)
    engine.ready(0)
    assert engine.sent == [(0, [((1,), {})])]  # the killed queued task was never sent
    scheduler.shutdown()


def test_kill_reaches_a_retry_waiting_out_its_backoff(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock, retries=3, backoff=30, retry_on=(ConnectionError,))
    future = scheduler.submit_call(_flaky(9), (), {})
    engine.finish(0)
    assert future.kill()
    clock.advance(60)
    assert len(engine.sent) == 1
    with pytest.raises(cw.Cancelled):
        future.result(timeout=BOUND)
    scheduler.shutdown()


def test_shutdown_cancelling_futures_leaves_the_running_task_to_finish(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock)
    running = scheduler.submit_call(square, (3,), {})
    waiting = [scheduler.submit_call(square, (x,), {}) for x in range(3)]
    scheduler.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(cw.PoolClosed):
        scheduler.submit_call(square, (4,), {})
    assert not engine.stopped  # the running task finishes first
    engine.finish(0)
    assert running.result(timeout=BOUND) == 9
    assert engine.stopped


def test_a_worker_is_recycled_after_max_tasks(clock):
    engine = FakeEngine(slots=1)
    scheduler = Scheduler(engine, max_tasks_per_worker=2, clock=clock)
    engine.ready()
    futures = [scheduler.submit_call(square, (x,), {}) for x in range(3)]
    engine.finish(0)
    assert engine.restarted == []
    engine.finish(0)
    assert engine.restarted == [0] and 0 not in engine.running  # waits for the new worker
    engine.ready(0)
    engine.finish(0)
    assert [f.result(timeout=BOUND) for f in futures] == [0, 1, 4]
    scheduler.shutdown()


def test_a_broken_engine_fails_every_pending_task_and_refuses_more(clock):
    engine = FakeEngine(slots=1)
    scheduler = _scheduler(engine, clock)
    futures = [scheduler.submit_call(square, (x,), {}) for x in range(3)]
    scheduler.engine_broken(cw.CoreworkError("the engine is gone (fake)"))
    for future in futures:
        with pytest.raises(cw.CoreworkError, match="gone"):
            future.result(timeout=BOUND)
    with pytest.raises(cw.CoreworkError, match="gone"):
        scheduler.submit_call(square, (1,), {})
    assert engine.stopped
