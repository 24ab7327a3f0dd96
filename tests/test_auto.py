"""engine="auto": every task in a worker process, the probe's verdicts, pools sized for
waiting work, and results that never change while it decides."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corework as cw
from corework import _auto
from corework.engines import default_workers, gil_enabled
from tests.helpers import ROOT_ENV, cpu_task

with_gil = pytest.mark.skipif(not gil_enabled(), reason="the GIL's rules: this CPython has "
                              "none (see the no-GIL test)")


def io_task(x):
    time.sleep(0.05)
    return x


def where(_=None):
    time.sleep(0.05)
    return os.getpid(), threading.get_ident()


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


def parse(text):
    return int(text)


@pytest.fixture(autouse=True)
def forget_verdicts():
    _auto._verdicts.clear()
    yield
    _auto._verdicts.clear()


def figures(samples=10, delay=0.0001, cpu_share=0.05, switch=0.01):
    return {"samples": samples, "delay": delay, "switch": switch, "busy": cpu_share,
            "cpu_share": cpu_share, "wall": 0.05, "ended": 0.0}


def test_the_rules_on_synthetic_figures():
    decide = _auto.decide
    held = decide(figures(samples=2, delay=0.01, cpu_share=1.0), gil=True)
    assert not held.waits and "holds the GIL" in held.reason
    native = decide(figures(delay=0.0002, cpu_share=1.0), gil=True)
    assert not native.waits and "native" in native.reason
    waiting = decide(figures(cpu_share=0.05), gil=True)
    assert waiting.waits and "wait" in waiting.reason
    tiny = decide(figures(samples=1, cpu_share=0.1), gil=True)
    assert not tiny.waits and "tiny" in tiny.reason
    assert decide(figures(samples=2, delay=0.01, cpu_share=1.0), gil=False).waits is False
    assert decide(figures(samples=20, delay=0.01, cpu_share=0.05), gil=False).waits


def test_waiting_work_gets_threads_for_the_tasks_in_flight():
    waiting = _auto.decide(figures(cpu_share=0.0), gil=True)
    cores = default_workers()
    processes = cores
    assert _auto.threads_for(waiting, processes, 8) * processes >= 8  # every task at once
    assert _auto.threads_for(waiting, processes, 10_000) * processes <= _auto.WAITING_MOST + cores
    cpu = _auto.decide(figures(samples=2, delay=0.01, cpu_share=1.0), gil=True)
    assert _auto.threads_for(cpu, processes, 10_000) == 1


def test_every_task_runs_in_a_worker_process_never_here():
    pids = {pid for pid, _ in cw.map(where, range(4))}
    assert os.getpid() not in pids


@with_gil
@pytest.mark.skipif(default_workers() < 2, reason="needs two cores to tell GIL from not")
def test_auto_runs_pure_python_cpu_work_one_task_per_process():
    items = [1_500_000] * 6
    assert cw.map(cpu_task, items, workers=2) == [cpu_task(n) for n in items]
    verdict = _auto.remembered(cpu_task)
    assert not verdict.waits and "GIL" in verdict.reason, verdict


def test_auto_gives_waiting_tasks_threads_in_the_worker_processes():
    places = cw.map(where, range(12))
    verdict = _auto.remembered(where)
    assert verdict.waits and "wait" in verdict.reason, verdict
    processes = {pid for pid, _ in places}
    assert len(set(places)) > len(processes)  # several threads in a process ran tasks
    assert os.getpid() not in processes


def test_an_explicit_workers_is_honoured_for_waiting_tasks():
    places = cw.map(where, range(8), workers=2)
    assert _auto.remembered(where).waits
    assert len(set(places)) <= 2


@pytest.mark.skipif(gil_enabled(), reason="for CPython without a GIL")
def test_without_a_gil_cpu_work_still_runs_a_task_per_process():
    assert cw.map(cpu_task, [300_000] * 4, workers=2) == [cpu_task(300_000)] * 4
    assert not _auto.remembered(cpu_task).waits


@with_gil
@pytest.mark.skipif(default_workers() < 2, reason="needs two cores to see GIL-free code")
def test_numpy_that_releases_the_gil_runs_one_task_per_core():
    pytest.importorskip("numpy")
    expected = [svd_task(seed) for seed in range(8)]
    assert cw.map(svd_task, range(8), workers=2) == expected
    verdict = _auto.remembered(svd_task)
    assert not verdict.waits, verdict


def test_the_verdict_is_remembered_per_function():
    cw.map(io_task, range(4), workers=2)
    first = _auto.remembered(io_task)
    assert first is not None
    assert list(cw.imap(io_task, range(4), workers=2)) == list(range(4))
    assert _auto.remembered(io_task) is first
    lambdas = [lambda x: x + 1 for _ in range(2)]  # same code, another object
    cw.map(lambdas[0], range(3), workers=2)
    assert _auto.remembered(lambdas[1]) is _auto.remembered(lambdas[0])


def test_a_function_that_cannot_be_pickled_runs_on_threads_with_a_warning():
    lock = threading.Lock()

    def locked(x):
        with lock:
            return x * 2

    with pytest.warns(cw.CoreworkWarning, match="on threads in this process"):
        assert cw.map(locked, range(5)) == [0, 2, 4, 6, 8]


def test_a_first_item_that_cannot_be_pickled_runs_on_threads_with_a_warning():
    items = [threading.Lock() for _ in range(3)]
    with pytest.warns(cw.CoreworkWarning, match="first item"):
        assert cw.map(lambda lock: lock.locked(), iter(items)) == [False] * 3


kinds = st.sampled_from(["value", "sleep", "cpu"])


@settings(max_examples=20, deadline=None)
@given(st.lists(kinds, max_size=24), st.booleans(), st.integers(1, 3),
       st.sampled_from(["list", "generator"]))
def test_results_never_change_while_auto_decides(kinds_, ordered, workers, shape):
    items = [(kind, index) for index, kind in enumerate(kinds_)]
    _auto._verdicts.clear()
    source = items if shape == "list" else iter(items)
    results = list(cw.imap(mixed, source, workers=workers, ordered=ordered))
    expected = [mixed(item) for item in items]
    assert results == expected if ordered else sorted(results) == expected


@pytest.mark.parametrize("bad", [0, 1, 7])  # the first task, the next, one later
def test_the_first_failure_in_input_order_is_raised(bad):
    items = [("fail" if i in (bad, 9) else "value", i) for i in range(12)]
    with pytest.raises(ValueError, match=f"bad {bad}"):
        cw.map(mixed, items, workers=2)


@pytest.mark.parametrize("size, bad", [(6, 3), (1000, 700)])
def test_errors_name_the_item_at_its_place_in_the_input(size, bad):
    items = [str(i) for i in range(size)]
    items[bad] = "12x"
    with pytest.raises(ValueError) as info:
        cw.map(parse, items)
    assert f"raised by task {bad} (item '12x')" in info.value.__notes__


CALLER = """
import os, signal, sys
import corework as cw

def task(x):
    if x == 3:
        {action}
    return x

if __name__ == "__main__":
    try:
        cw.map(task, range(20), workers=2)
    except cw.WorkerCrashed as exc:
        print("caught", type(exc).__name__, exc, flush=True)
    print("results", cw.map(task, range(20), workers=2, errors="return").count(None),
          flush=True)
    print("alive", flush=True)
"""


@pytest.mark.parametrize("action, death", [
    ("os._exit(3)", "exit code 3"),
    ("import faulthandler; faulthandler._sigsegv()", "signal SIGSEGV"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "signal SIGKILL"),
])
def test_the_caller_survives_tasks_that_kill_their_process(tmp_path, action, death):
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(CALLER.format(action=action)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=ROOT_ENV)
    assert done.returncode == 0, done.stderr
    assert "caught WorkerCrashed worker process" in done.stdout
    assert death in done.stdout
    assert "results 0" in done.stdout and "alive" in done.stdout
