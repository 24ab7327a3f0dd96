"""``Pool._imap_calls``: every task's outcome in its place, failures included (the
iteration ``corework run`` is built on)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import corework as cw
from tests.helpers import add, fail_on


def crash_once_at(x: int, marker: str) -> int:
    """Crashes its worker the first time it sees 4; succeeds on the retry."""
    if x == 4 and not Path(marker).exists():
        Path(marker).write_text("crashed")
        os._exit(9)
    return x


def calls(values):
    return [((v,), {}) for v in values]


@pytest.mark.parametrize("ordered", [True, False])
def test_failures_are_reported_in_place_and_the_rest_go_on(engine, ordered):
    with cw.Pool(2, engine=engine) as pool:
        outcomes = [o for chunk in pool._imap_calls(fail_on, calls(range(20)), ordered=ordered,
                                                       chunksize=3) for o in chunk]
    if ordered:
        assert [o.index for o in outcomes] == list(range(20))
    by_index = {o.index: o for o in outcomes}
    assert sorted(by_index) == list(range(20))
    assert isinstance(by_index[3].error, ValueError)
    assert all(by_index[i].value == i and by_index[i].error is None for i in by_index if i != 3)
    assert all(o.attempts == 1 for o in outcomes)


def test_args_and_kwargs_are_spread(engine):
    with cw.Pool(2, engine=engine) as pool:
        chunks = pool._imap_calls(add, [((1,), {"b": 2}), ((5, 6), {})], ordered=True,
                                    chunksize="auto")
        assert [o.value for chunk in chunks for o in chunk] == [3, 11]


def test_crashes_count_attempts_for_successes_and_failures(tmp_path):
    marker = str(tmp_path / "marker")
    items = [((x, marker), {}) for x in range(8)]
    with cw.Pool(2, engine="process", retries=1) as pool:
        outcomes = [o for chunk in pool._imap_calls(crash_once_at, items, ordered=True,
                                                      chunksize=1) for o in chunk]
        crashed = [o for chunk in pool._imap_calls(os._exit, [((3,), {})], ordered=True,
                                                     chunksize=1) for o in chunk]
    assert [o.value for o in outcomes] == list(range(8))
    assert outcomes[4].attempts == 2
    assert isinstance(crashed[0].error, cw.WorkerCrashed) and crashed[0].attempts == 2
