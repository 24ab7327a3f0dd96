"""``cw.aimap`` and ``Pool.aimap`` under a real asyncio loop, on real worker processes: the
loop keeps serving other coroutines while results are awaited, and cancelling the
iteration cancels (and, when asked, kills) the work."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from pathlib import Path

import pytest

import corework as cw
from tests.async_tasks import fail_on_three, mark_and_sleep, nap, slow_square


async def ticking(ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks.append(time.monotonic())
        await asyncio.sleep(0.01)


async def collect_while_ticking(results: object) -> tuple[list[object], list[float]]:
    """Every result of the async iterator, and the ticks a concurrent coroutine made."""
    ticks: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(ticking(ticks, stop))
    got = [value async for value in results]  # type: ignore[attr-defined]
    stop.set()
    await ticker
    return got, ticks


def test_results_come_in_order_while_the_loop_serves_others():
    async def main():
        return await collect_while_ticking(
            cw.aimap(slow_square, range(40), engine="process", workers=2, chunksize=1))

    started = time.monotonic()
    got, ticks = asyncio.run(main())
    elapsed = time.monotonic() - started
    assert got == [x * x for x in range(40)]
    # 40 tasks of 50 ms on 2 workers: about a second, during which the ticker ran on.
    assert len(ticks) >= 0.5 * elapsed / 0.01 / 2, (len(ticks), elapsed)
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5


def test_unordered_results_come_as_done():
    async def main():
        return [x async for x in cw.aimap(nap, [0.8, 0.05, 0.05, 0.05], engine="process",
                                          workers=2, chunksize=1, ordered=False)]

    got = asyncio.run(main())
    assert sorted(got) == [0.05, 0.05, 0.05, 0.8]
    assert got[-1] == 0.8


def test_errors_raise_return_and_outcome():
    async def main(errors):
        return [x async for x in cw.aimap(fail_on_three, range(6), engine="process",
                                          workers=2, errors=errors)]

    with pytest.raises(ValueError, match="bad item 3"):
        asyncio.run(main("raise"))
    returned = asyncio.run(main("return"))
    assert returned[:3] == [0, 1, 2] and returned[4:] == [4, 5]
    assert isinstance(returned[3], ValueError)
    outcomes = asyncio.run(main("outcome"))
    assert [o.index for o in outcomes] == list(range(6))
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]


def test_options_are_checked_at_the_call():
    with pytest.raises(ValueError, match="errors"):
        cw.aimap(slow_square, [1], errors="ignore")
    with cw.Pool(1, engine="thread") as pool, pytest.raises(ValueError, match="chunksize"):
        pool.aimap(slow_square, [1], chunksize=0)


def started_tasks(folder: Path) -> list[tuple[int, int]]:
    return sorted((int(i), int(pid)) for i, pid in (p.name.split(".") for p in folder.iterdir()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancelling_the_task_kills_what_runs_and_starts_nothing_more(tmp_path):
    jobs = [(str(tmp_path), i, 30.0) for i in range(10)]

    async def consume(pool):
        async for _ in pool.aimap(mark_and_sleep, jobs, chunksize=1, kill_on_cancel=True):
            pass

    async def main(pool):
        task = asyncio.create_task(consume(pool))
        while len(list(tmp_path.iterdir())) < 2:
            await asyncio.sleep(0.02)
        pids = pool._pids()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    started = time.monotonic()
    with cw.Pool(2, engine="process") as pool:
        pids = asyncio.run(main(pool))
        time.sleep(0.5)
        assert [i for i, _ in started_tasks(tmp_path)] == [0, 1]  # nothing more started
        assert not any(alive(pid) for pid in pids)  # the running ones were killed
        assert pool.submit(slow_square, 7).result(timeout=30) == 49  # the pool goes on
    assert time.monotonic() - started < 20


def test_leaving_early_without_kill_lets_running_tasks_finish_unseen(tmp_path):
    jobs = [(str(tmp_path), i, 0.3) for i in range(20)]

    async def main(pool):
        results = pool.aimap(mark_and_sleep, jobs, chunksize=1)
        async with contextlib.aclosing(results):
            async for first in results:
                return first, pool._pids()
        raise AssertionError("no result")

    with cw.Pool(2, engine="process") as pool:
        first, pids = asyncio.run(main(pool))
        time.sleep(1.0)
        assert first == 0
        assert len(started_tasks(tmp_path)) <= 4  # those running or taken when it closed
        assert pool._pids() == pids  # nobody killed


def test_a_fresh_pool_of_its_own_stops_when_left(tmp_path):
    jobs = [(str(tmp_path), i, 30.0) for i in range(6)]

    async def main():
        results = cw.aimap(mark_and_sleep, jobs, engine="process", workers=2, chunksize=1,
                           kill_on_cancel=True)
        consumer = asyncio.create_task(anext(results))
        while len(list(tmp_path.iterdir())) < 2:
            await asyncio.sleep(0.02)
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await results.aclose()

    started = time.monotonic()
    asyncio.run(main())
    time.sleep(0.5)
    assert not any(alive(pid) for _, pid in started_tasks(tmp_path))
    assert len(started_tasks(tmp_path)) == 2
    assert time.monotonic() - started < 20


def test_engine_auto_and_threads():
    async def main():
        auto = [x async for x in cw.aimap(slow_square, range(8))]
        with cw.Pool(2, engine="thread") as pool:
            threads = [x async for x in pool.aimap(slow_square, range(8), ordered=False)]
        return auto, threads

    auto, threads = asyncio.run(main())
    assert auto == [x * x for x in range(8)]
    assert sorted(threads) == auto
