"""Pool is a real concurrent.futures.Executor: the stdlib's contract, on every engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time

import pytest

import corework as cw
from tests.helpers import add, recall, remember, square, whoami


def test_pool_is_an_executor():
    assert issubclass(cw.Pool, concurrent.futures.Executor)


def test_submit_returns_a_future_with_the_result(engine):
    with cw.Pool(2, engine=engine) as pool:
        future = pool.submit(add, 2, b=3)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result() == 5


def test_executor_map_over_several_iterables(engine):
    with cw.Pool(2, engine=engine) as pool:
        assert list(pool.map(add, [1, 2, 3], [10, 20])) == [11, 22]


def test_executor_map_with_chunksize(engine):
    with cw.Pool(2, engine=engine) as pool:
        assert list(pool.map(square, range(50), chunksize=8)) == [x * x for x in range(50)]


def test_executor_map_timeout_raises_timeout_error(engine):
    release = threading.Event() if engine == "thread" else None
    with cw.Pool(1, engine=engine) as pool:
        if release is not None:
            results = pool.map(release.wait, [30], timeout=0.05)
        else:
            results = pool.map(_blocks_until_killed, [None], timeout=0.05)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        if release is not None:
            release.set()
        else:
            pool.kill()


def _blocks_until_killed(_):
    while True:  # in Python, not in C code: a thread or sub-interpreter is interruptible
        time.sleep(0.001)


def test_submit_after_shutdown_raises_runtime_error(engine):
    pool = cw.Pool(1, engine=engine)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(square, 2)


def test_shutdown_cancel_futures_cancels_what_has_not_started(engine):
    gate = threading.Event()
    with cw.Pool(1, engine="thread") as pool:
        running = pool.submit(gate.wait)
        waiting = [pool.submit(square, n) for n in range(5)]
        pool.shutdown(wait=False, cancel_futures=True)
        gate.set()
        assert running.result() is True
    assert all(future.cancelled() for future in waiting)


def test_shutdown_without_wait_still_finishes_submitted_work(engine):
    pool = cw.Pool(2, engine=engine)
    futures = [pool.submit(square, n) for n in range(20)]
    pool.shutdown(wait=False)
    assert [f.result() for f in futures] == [n * n for n in range(20)]
    pool.shutdown(wait=True)  # reap


def test_as_completed_and_wait(engine):
    with cw.Pool(2, engine=engine) as pool:
        futures = [pool.submit(square, n) for n in range(10)]
        done = {f.result() for f in concurrent.futures.as_completed(futures)}
        assert done == {n * n for n in range(10)}
        finished, pending = concurrent.futures.wait(futures)
        assert len(finished) == 10 and not pending


def test_asyncio_run_in_executor(engine):
    async def main(pool):
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(pool, square, n) for n in range(5)))

    with cw.Pool(2, engine=engine) as pool:
        assert asyncio.run(main(pool)) == [0, 1, 4, 9, 16]


def test_initializer_runs_in_every_worker(engine):
    with cw.Pool(2, engine=engine, initializer=remember, initargs=("ready",)) as pool:
        assert set(pool.map(recall, range(8))) == {"ready"}


def test_failing_initializer_breaks_the_pool_with_a_clear_error(engine):
    def broken_init():
        raise OSError("no database")

    with cw.Pool(1, engine=engine, initializer=broken_init) as pool:
        # Submitting may already fail, if the pool broke first; else the future fails.
        with pytest.raises(cw.InitializerFailed, match="no database"):
            pool.submit(square, 2).result(timeout=60)
        with pytest.raises(cw.InitializerFailed, match="no database") as info:
            pool.submit(square, 3).result(timeout=60)
        assert isinstance(info.value.__cause__, OSError)


def test_done_callbacks_may_submit_more_work(engine):
    finished = threading.Event()
    results = []
    with cw.Pool(1, engine=engine) as pool:
        def chain(future):
            results.append(future.result())
            if len(results) < 3:
                pool.submit(square, len(results)).add_done_callback(chain)
            else:
                finished.set()

        pool.submit(square, 7).add_done_callback(chain)
        assert finished.wait(60)
    assert results == [49, 1, 4]


def test_a_cancelled_future_never_runs(engine):
    gate = threading.Event()
    ran = []
    with cw.Pool(1, engine="thread") as pool:
        blocker = pool.submit(gate.wait)
        later = pool.submit(ran.append, 1)
        assert later.cancel()
        gate.set()
        blocker.result()
    assert ran == []


def test_process_pool_workers_are_separate_processes():
    with cw.Pool(2, engine="process") as pool:
        pids = {pid for pid, _ in pool.map(whoami, range(50))}
        assert os.getpid() not in pids
        assert pids <= set(pool._pids())


def test_thread_pool_runs_in_this_process():
    with cw.Pool(2, engine="thread") as pool:
        assert {pid for pid, _ in pool.map(whoami, range(10))} == {os.getpid()}


def test_spawn_start_method_runs_lambdas():
    with cw.Pool(1, engine="process", start_method="spawn") as pool:
        assert pool.submit(lambda: 6 * 7).result() == 42


def test_bad_start_method_is_refused():
    with pytest.raises(ValueError, match="start_method"):
        cw.Pool(1, engine="process", start_method="teleport")


def _signal_then_block(fifo):
    with open(fifo, "w") as started:
        started.write("x")
    threading.Event().wait()


def test_kill_cancels_pending_and_running_work(tmp_path):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    pool = cw.Pool(1, engine="process")
    running = pool.submit(_signal_then_block, str(fifo))
    pending = pool.submit(square, 3)
    with open(fifo) as started:
        assert started.read() == "x"  # the task is running now
    pool.kill()
    with pytest.raises(cw.Cancelled):
        running.result(timeout=60)
    assert pending.cancelled() or isinstance(pending.exception(), cw.Cancelled)


def test_a_large_initializer_argument_reaches_every_worker(engine):
    big = bytes(range(256)) * 8192  # 2 MiB: larger than a socket buffer
    with cw.Pool(2, engine=engine, initializer=remember, initargs=(big,)) as pool:
        assert set(pool.map(_recall_length, range(4))) == {len(big)}


def _recall_length(_):
    return len(recall())


def nap(seconds):
    """Sleeps in short steps: a thread is interruptible between them (not in one long C call)."""
    for _ in range(int(seconds / 0.01)):
        time.sleep(0.01)


def test_futures_cancelled_by_kill_wake_their_waiters(engine):
    """A task that never started, cancelled by ``Pool.kill()``, counts as done for
    ``concurrent.futures.wait`` (which ``cw.Process.join`` uses), not pending forever."""
    pool = cw.Pool(1, engine=engine)
    running = pool.submit(nap, 30)
    waiting = pool.submit(abs, -1)
    pool.kill()
    done, _ = concurrent.futures.wait([running, waiting], timeout=10)
    assert done == {running, waiting}
    assert waiting.cancelled()


def test_code_written_for_process_pool_executor_reads_max_workers(engine):
    with cw.Pool(2, engine=engine) as pool:
        assert pool._max_workers == 2
