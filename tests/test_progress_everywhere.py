"""``progress=`` on every map of a Pool and on cw.map: a callback, a user's tqdm bar."""

from __future__ import annotations

import io

import pytest

import corework as cw

tqdm = pytest.importorskip("tqdm")


def square(x):
    return x * x


def inverse(x):
    return 1 / x


@pytest.fixture(autouse=True)
def no_tqdm_monitor(monkeypatch):
    """tqdm's monitor thread outlives a bar (the leak check would see it)."""
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


@pytest.fixture(scope="module")
def pool():
    with cw.Pool(2, engine="process") as pool:
        yield pool


def test_pool_map_calls_back_with_done_total_failed(pool):
    calls = []
    assert list(pool.map(square, range(20), progress=lambda *a: calls.append(a))) == [
        x * x for x in range(20)]
    assert calls[-1] == (20, 20, 0)
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)


def test_pool_imap_counts_failures_with_errors_return(pool):
    calls = []
    results = list(pool.imap(inverse, range(6), errors="return", chunksize=1,
                             progress=lambda *a: calls.append(a)))
    assert isinstance(results[0], ZeroDivisionError)
    assert calls[-1] == (6, 6, 1)


def test_pool_starmap_advances_the_users_tqdm_bar(pool):
    out = io.StringIO()
    with tqdm.tqdm(file=out) as bar:
        assert pool.starmap(pow, [(i, 2) for i in range(9)], progress=bar) == [
            i * i for i in range(9)]
        assert (bar.n, bar.total) == (9, 9)
        assert not bar.disable
    assert "9/9" in out.getvalue()


def test_pool_map_with_a_tqdm_bar_and_no_length(pool):
    out = io.StringIO()
    bar = tqdm.tqdm(file=out)
    assert list(pool.map(square, iter(range(5)), buffersize=2, progress=bar)) == [
        0, 1, 4, 9, 16]
    assert bar.n == 5 and bar.total is None
    bar.close()


def test_imap_batches_and_cw_map_take_a_callback(pool):
    calls = []
    batches = list(pool.imap_batches(square, [((i,), {}) for i in range(4)],
                                     progress=lambda *a: calls.append(a)))
    assert sorted(v for batch in batches for v in batch) == [0, 1, 4, 9]
    assert calls[-1] == (4, 4, 0)
    calls.clear()
    assert cw.map(square, range(5), engine="thread", progress=lambda *a: calls.append(a)) == [
        0, 1, 4, 9, 16]
    assert calls[-1] == (5, 5, 0)


def test_a_bad_progress_is_refused_at_the_call(pool):
    with pytest.raises(TypeError, match="progress must be"):
        pool.map(square, [1], progress=3)
    with pytest.raises(TypeError, match="progress must be"):
        cw.map(square, [1], progress="yes")


def test_pool_map_keeps_the_stdlib_signature(pool):
    assert list(pool.map(pow, [1, 2], [3, 4], timeout=30, chunksize=1)) == [1, 16]


@pytest.mark.parametrize("mapper", ["thread_map", "process_map"])
def test_tqdm_maps_on_the_drop_in_executors_fill_their_bar(mapper, monkeypatch, capsys):
    """tqdm's maps count progress by replacing the executor's ``submit``: corework's
    ``map`` must go through it, as the standard library's does."""
    import concurrent.futures

    import tqdm.contrib.concurrent

    import corework.futures

    for name in ("ThreadPoolExecutor", "ProcessPoolExecutor"):
        monkeypatch.setattr(concurrent.futures, name, getattr(corework.futures, name))
    run = getattr(tqdm.contrib.concurrent, mapper)
    assert run(square, range(9), max_workers=2, miniters=1) == [x * x for x in range(9)]
    with pytest.raises(ZeroDivisionError):
        run(inverse, [1, 0, 2], max_workers=2)
    bars = capsys.readouterr().err
    assert "9/9" in bars and "0/9" in bars
