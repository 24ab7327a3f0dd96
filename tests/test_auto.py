"""engine="auto": the probe's verdicts, and results that never change while it switches."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corework as cw
from corework import _auto
from corework.engines import default_workers, gil_enabled
from tests.helpers import cpu_task

with_gil = pytest.mark.skipif(not gil_enabled(), reason="the GIL's rules: this CPython has "
                              "none (auto picks threads at once: see the no-GIL test)")


def io_task(x):
    time.sleep(0.05)
    return x


def svd_task(seed):
    import numpy as np

    matrix = np.random.default_rng(seed).standard_normal((300, 300))
    return float(np.linalg.svd(matrix)[1][0])


def mixed(item):
    kind, value = item
    if kind == "sleep":
        time.sleep(0.002)
    elif kind == "cpu":
        cpu_task(2000)
    elif kind == "fail":
        raise ValueError(f"bad {value}")
    return value


@pytest.fixture(autouse=True)
def forget_verdicts():
    _auto._verdicts.clear()
    yield
    _auto._verdicts.clear()


@with_gil
def test_the_rules_on_synthetic_figures():
    decide = _auto.decide
    if default_workers() < 2:
        pytest.skip("the rules need two cores")
    assert decide([], 2, 1.0, None, 2, 0.005).engine == "process"  # GIL held: waits 5 ms
    assert decide([], 2, 1.9, None, 2, 0.0001).engine == "thread"  # native: GIL free
    assert decide([], 2, 0.05, None, 2, 0.0).engine == "thread"  # waiting
    assert "wait" in decide([], 2, 0.05, None, 2, 0.0).reason
    assert decide([(0.001, 0.001)] * 2, 0, 1.0, 10_000, 2, None).engine == "process"
    assert decide([(0.01, 0.001)] * 2, 0, 0.1, 1000, 2, None).engine == "thread"
    assert decide([(0.01, 0.01)] * 2, 0, 1.0, 3, 2, 0.005).engine == "thread"  # little left
    assert decide([], 2, 1.0, None, 1, 0.005).engine == "thread"  # one worker


@with_gil
@pytest.mark.skipif(default_workers() < 2, reason="needs two cores to tell GIL from not")
def test_auto_picks_processes_for_pure_python_cpu_work():
    items = [1_500_000] * 6  # about 0.1 s each: enough to pay for processes
    assert cw.map(cpu_task, items, workers=2) == [cpu_task(n) for n in items]
    verdict = _auto.remembered(cpu_task)
    assert verdict.engine == "process", verdict


def test_auto_picks_threads_for_waiting():
    assert cw.map(io_task, range(8), workers=4) == list(range(8))
    verdict = _auto.remembered(io_task)
    assert verdict.engine == "thread", verdict
    assert "wait" in verdict.reason or not gil_enabled()


@pytest.mark.skipif(gil_enabled(), reason="for CPython without a GIL")
def test_without_a_gil_auto_picks_threads_without_a_probe():
    assert cw.map(cpu_task, [1000] * 4, workers=2) == [cpu_task(1000)] * 4
    assert "without a GIL" in _auto.remembered(cpu_task).reason


@with_gil
@pytest.mark.skipif(default_workers() < 2, reason="needs two cores to see GIL-free code")
def test_auto_picks_threads_for_numpy_that_releases_the_gil():
    pytest.importorskip("numpy")
    expected = [svd_task(seed) for seed in range(8)]
    assert cw.map(svd_task, range(8), workers=2) == expected
    verdict = _auto.remembered(svd_task)
    assert verdict.engine == "thread", verdict


def test_the_verdict_is_remembered_per_function():
    cw.map(io_task, range(4), workers=2)
    first = _auto.remembered(io_task)
    assert list(cw.imap(io_task, range(4), workers=2)) == list(range(4))
    assert _auto.remembered(io_task) is first
    lambdas = [lambda x: x + 1 for _ in range(2)]  # same code, another object
    cw.map(lambdas[0], range(3), workers=2)
    assert _auto.remembered(lambdas[1]) is _auto.remembered(lambdas[0])


kinds = st.sampled_from(["value", "sleep", "cpu"])


@settings(max_examples=25, deadline=None)
@given(st.lists(kinds, max_size=24), st.booleans(), st.integers(1, 3),
       st.sampled_from(["list", "generator"]))
def test_results_never_change_while_auto_switches(kinds_, ordered, workers, shape):
    items = [(kind, index) for index, kind in enumerate(kinds_)]
    _auto._verdicts.clear()
    source = items if shape == "list" else iter(items)
    results = list(cw.imap(mixed, source, workers=workers, ordered=ordered))
    expected = [mixed(item) for item in items]
    assert results == expected if ordered else sorted(results) == expected


@pytest.mark.parametrize("bad", [0, 1, 7])  # in the probe, at its edge, in the rest
def test_the_first_failure_in_input_order_is_raised(bad):
    items = [("fail" if i in (bad, 9) else "value", i) for i in range(12)]
    with pytest.raises(ValueError, match=f"bad {bad}"):
        cw.map(mixed, items, workers=2)
