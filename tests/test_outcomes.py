"""errors="return" and errors="outcome": every item's result or the exception it ended
with, in place, and the map never stops early — on every engine, ordered or not, with
task exceptions, crashes and timeouts mixed."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

import corework as cw
from tests.helpers import skip_on_dask
from tests.light_tasks import MIXED_BAD as BAD
from tests.light_tasks import mixed

DASK_ON = (importlib.util.find_spec("distributed") is not None
           and os.environ.get("COREWORK_TEST_DASK", "") != "0")



def check_in_place(items: list[int], results: list, kinds: dict[int, str]) -> None:
    for item, result in zip(items, results, strict=True):
        kind = kinds.get(item)
        if kind == "raise":
            assert isinstance(result, ValueError) and f"bad {item}" in str(result)
        elif kind == "crash":
            assert isinstance(result, cw.WorkerCrashed), result
        elif kind == "hang":
            assert isinstance(result, cw.TaskTimeout), result
        else:
            assert result == item * 10


def kinds_for(engine: str) -> dict[int, str]:
    """What can go wrong on ``engine``: a crash would end the caller on threads. On dask
    a crash is not mixed with a 1 s timeout: Dask re-runs a task whose worker died
    (``allowed-failures``, 3), so one crashing task ends a worker four times, and a
    timeout there counts from when the task is handed to Dask (engines/dask/), so it
    would hit the tasks waiting out those restarts too. Crashes in place on dask:
    ``test_crashes_and_exceptions_in_place_on_dask``."""
    if engine in ("thread", "interpreter", "dask"):
        return {3: "raise", 11: "hang"}
    return BAD


@pytest.fixture(params=["auto", "each"])
def map_engine(request, engine):
    """Every engine of the matrix, and auto (the default) once."""
    if request.param == "auto":
        if engine != "process":
            pytest.skip("auto is tested once")
        return "auto"
    return engine


@pytest.mark.parametrize("ordered", [True, False])
def test_map_returns_every_outcome_in_place(map_engine, ordered):
    kinds = kinds_for(map_engine)
    if map_engine == "interpreter" and sys.version_info < (3, 13):
        pytest.skip("3.12's sub-interpreters cannot stop a hung task")
    items = [x for x in range(16) if x in kinds or x not in BAD]
    results = cw.map(mixed, items, engine=map_engine, workers=2, timeout=1.0,
                     errors="return", ordered=ordered)
    assert len(results) == len(items)
    if ordered:
        check_in_place(items, results, kinds)
    else:
        values = sorted(r for r in results if not isinstance(r, BaseException))
        assert values == [x * 10 for x in items if x not in kinds]
        assert sum(isinstance(r, BaseException) for r in results) == len(kinds)


def test_outcomes_say_which_item_each_is(map_engine):
    kinds = kinds_for(map_engine)
    if map_engine == "interpreter" and sys.version_info < (3, 13):
        pytest.skip("3.12's sub-interpreters cannot stop a hung task")
    items = [x for x in range(16) if x in kinds or x not in BAD]
    outcomes = list(cw.imap(mixed, items, engine=map_engine, workers=2, timeout=1.0,
                            errors="outcome", ordered=False))
    assert sorted(o.index for o in outcomes) == list(range(len(items)))
    by_item = {items[o.index]: o for o in outcomes}
    for item, outcome in by_item.items():
        if item in kinds:
            assert not outcome.ok and outcome.error is not None
            with pytest.raises(type(outcome.error)):
                outcome.result()
        else:
            assert outcome.ok and outcome.result() == item * 10 and outcome.attempts == 1


@pytest.mark.skipif(not DASK_ON, reason="dask is not in the engine matrix")
@pytest.mark.parametrize("engine", ["dask"], indirect=True)
def test_crashes_and_exceptions_in_place_on_dask(engine):
    kinds = {3: "raise", 7: "crash"}
    items = [x for x in range(16) if x in kinds or x not in BAD]
    results = cw.map(mixed, items, engine="dask", workers=2, errors="return")
    check_in_place(items, results, kinds)


def test_pool_imap_and_starmap_take_errors_too(engine):
    skip_on_dask(engine, "covered by the map test; a pool per call is slow there")
    with cw.Pool(2, engine=engine) as pool:
        results = list(pool.imap(divide, [1, 0, 2], errors="return"))
        assert results[0] == 1.0 and isinstance(results[1], ZeroDivisionError)
        assert results[2] == 0.5
        assert pool.starmap(pow, [(2, 3), (0, -1)], errors="return")[0] == 8
        assert isinstance(pool.starmap(pow, [(2, 3), (0, -1)], errors="return")[1],
                          ZeroDivisionError)


def divide(x: int) -> float:
    return 1 / x


def test_a_returned_exception_and_a_raised_one_differ_only_as_outcomes():
    results = cw.map(give_or_raise, [0, 1], engine="thread", errors="return")
    assert [type(r) for r in results] == [KeyError, KeyError]  # the same in place
    outcomes = cw.map(give_or_raise, [0, 1], engine="thread", errors="outcome")
    assert outcomes[0].ok and not outcomes[1].ok


def give_or_raise(x: int) -> object:
    if x:
        raise KeyError(x)
    return KeyError(x)


def test_an_item_that_cannot_be_pickled_fails_in_place():
    import threading

    items = [1, threading.Lock(), 3]
    results = cw.map(repr_of, items, engine="process", errors="return")
    assert results[0] == "1" and results[2] == "3"
    assert isinstance(results[1], cw.SerializationError)
    assert "task 1" in str(results[1])


def repr_of(x: object) -> str:
    return repr(x)


def test_errors_must_be_one_of_three():
    with pytest.raises(ValueError, match="errors must be one of"):
        cw.map(abs, [1], errors="ignore")
