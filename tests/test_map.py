"""map / imap / starmap: results, order, laziness, chunking — on every engine."""

from __future__ import annotations

import itertools

import pytest

import corework as cw
from tests.helpers import add, skip_on_interpreter, square


def test_map_returns_results_in_input_order(engine):
    assert cw.map(square, range(1000), engine=engine, workers=2) == [x * x for x in range(1000)]


def test_map_of_empty_input_is_empty(engine):
    assert cw.map(square, [], engine=engine) == []


def test_map_reads_generators_of_unknown_length(engine):
    numbers = (x for x in range(517))
    assert cw.map(square, numbers, engine=engine, workers=2) == [x * x for x in range(517)]


@pytest.mark.parametrize("chunksize", [1, 7, 1000])
def test_explicit_chunksize_gives_same_results(engine, chunksize):
    result = cw.map(square, range(100), engine=engine, workers=2, chunksize=chunksize)
    assert result == [x * x for x in range(100)]


def test_imap_unordered_yields_every_result_once(engine):
    results = list(cw.imap(square, range(300), engine=engine, workers=2, ordered=False))
    assert sorted(results) == [x * x for x in range(300)]


def test_imap_is_lazy_over_an_endless_input(engine):
    first = list(itertools.islice(cw.imap(square, itertools.count(), engine=engine,
                                          workers=2), 50))
    assert first == [x * x for x in range(50)]


def test_lambdas_and_closures_run_on_every_engine(engine):
    offset = 10
    assert cw.map(lambda x: x + offset, range(5), engine=engine) == [10, 11, 12, 13, 14]


def test_a_task_may_itself_use_corework(engine):
    skip_on_interpreter(engine, "a sub-interpreter cannot start the daemon threads a pool uses")
    def inner_sum(n):
        return sum(cw.map(square, range(n), engine=engine, workers=2))

    assert cw.map(inner_sum, [3, 4], engine=engine, workers=2) == [5, 14]


def test_starmap_spreads_argument_tuples(engine):
    with cw.Pool(2, engine=engine) as pool:
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]


def test_imap_streams_ten_million_items_in_flat_memory():
    """A list of 10 million results would take ~400 MB; streaming must stay far below."""
    import psutil  # here: tasks of this module run in sub-interpreters, which refuse it

    me = psutil.Process()
    before = me.memory_info().rss
    total = 0
    for value in cw.imap(abs, range(10_000_000), engine="process", workers=2):
        total += value
    grown = me.memory_info().rss - before
    assert total == sum(range(10_000_000))
    assert grown < 100 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"


@pytest.mark.parametrize(("argument", "message"), [
    ({"chunksize": 0}, "chunksize"),
    ({"chunksize": "big"}, "chunksize"),
    ({"workers": 0}, "workers"),
    ({"engine": "gpu"}, "engine"),
])
def test_bad_arguments_are_refused_at_once(argument, message):
    with pytest.raises(ValueError, match=message):
        cw.map(square, range(3), **argument)


def test_a_non_callable_is_refused():
    with pytest.raises(TypeError, match="callable"):
        cw.map(42, range(3))  # type: ignore[arg-type]
