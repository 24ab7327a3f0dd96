"""cw.advise and ``corework advise``: the engines measured, the verdict, and its reasons."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import corework as cw
from corework.api import advise as _advise
from corework.engines import default_workers, gil_enabled
from tests.helpers import cpu_task


def wait_task(x):
    time.sleep(0.03)
    return x


def test_advice_for_waiting_tasks_is_threads_with_its_figures():
    advice = cw.advise(wait_task, range(8), workers=4)
    assert advice.engine == "thread"
    assert "wait" in advice.reason or not gil_enabled()
    assert set(advice.seconds) >= {"serial", "thread", "process"}
    assert advice.speedup["serial"] == 1.0 and advice.speedup["thread"] > 1.5
    assert advice.cpu_share < 0.5 and advice.gil_held == 0.0
    assert not advice.too_short and advice.task_seconds >= 0.03
    assert advice.pickle_bytes > 0 and advice.pickle_seconds >= 0
    assert json.loads(json.dumps(advice.as_dict()))["engine"] == "thread"
    assert "use engine='thread'" in str(advice)


@pytest.mark.skipif(default_workers() < 2 or not gil_enabled(),
                    reason="needs two cores, and a GIL, to see the GIL")
def test_advice_for_pure_python_cpu_work_is_a_gil_free_engine():
    advice = cw.advise(cpu_task, [400_000] * 6, workers=2)
    assert advice.engine in ("process", "interpreter"), advice
    assert advice.cpu_share > 0.8 and advice.holds_gil is True
    assert "GIL" in advice.reason


def tiny_task(x):
    return x + 1


def test_advice_for_micro_tasks_is_to_run_serially_or_batch():
    advice = cw.advise(tiny_task, range(16), workers=2)
    if advice.task_seconds >= _advise.SHORT_TASK_SECONDS:  # the fastest of 20 runs stalled
        pytest.skip(f"this machine is too busy to measure: x + 1 took "
                    f"{advice.task_seconds * 1e3:.1f} ms a task")
    assert advice.too_short, advice
    assert 0 < advice.task_seconds < _advise.SHORT_TASK_SECONDS
    assert all(advice.speedup[name] < 1 for name in advice.seconds if name != "serial")
    assert "too short for any pool" in advice.reason and "µs each" in advice.reason
    assert "serially" in advice.reason and "batch them" in advice.reason
    assert "is this machine busy" not in advice.reason
    assert advice.batch >= _advise.BATCH_SECONDS / _advise.SHORT_TASK_SECONDS
    assert f"{advice.batch:,} items per task" in advice.reason
    assert str(advice).startswith("run serially or batch: ")
    assert "time per task, serially" in str(advice)
    assert json.loads(json.dumps(advice.as_dict()))["too_short"] is True


def test_the_rules_behind_the_verdict():
    assert _advise._fastest({"serial": 1, "thread": 0.50, "process": 0.48}) == "thread"
    assert _advise._fastest({"serial": 1, "thread": 0.9, "process": 0.5}) == "process"
    assert _advise._gil_held(1.0, 2, 1.0) == 1.0
    assert _advise._gil_held(2.0, 2, 1.0) == 0.0
    assert _advise._gil_held(1.0, 2, 0.1) == 0.0  # waiting tasks: no GIL to speak of
    assert _advise._too_short(1e-6, {"serial": 1.0, "thread": 0.04, "process": 0.01})
    assert not _advise._too_short(1e-6, {"serial": 1.0, "thread": 1.2, "process": 0.5})
    assert not _advise._too_short(0.05, {"serial": 1.0, "thread": 0.9})  # not short: else


def test_an_empty_sample_is_refused():
    with pytest.raises(ValueError, match="non-empty sample"):
        cw.advise(wait_task, [])


def test_the_command_prints_the_advice(tmp_path):
    (tmp_path / "tasks.py").write_text(
        "import time\ndef wait(x):\n    time.sleep(0.02)\n    return x\n")
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(6)))
    command = [sys.executable, "-m", "corework", "advise", "tasks.py:wait",
               "--input", "in.jsonl", "--workers", "3"]
    shown = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("use engine='thread'")
    as_json = subprocess.run([*command, "--json"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert json.loads(as_json.stdout)["workers"] == 3


def test_the_command_says_what_is_wrong_in_one_line(tmp_path):
    (tmp_path / "in.txt").write_text("a\n")
    (tmp_path / "tasks.py").write_text("def boom(x):\n    raise KeyError(x)\n")
    for args, code, message in [
        (["nope.py:f", "--input", "in.txt"], 2, "no such file"),
        (["tasks.py:boom", "--input", "missing.txt"], 2, "missing.txt"),
        (["tasks.py:boom", "--input", "in.txt"], 1, "raised on the sample: KeyError"),
    ]:
        done = subprocess.run([sys.executable, "-m", "corework", "advise", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def busy_machine():
    """Two busy loops beside the test, as on a shared machine (one per core here)."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(2)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.mark.skipif(not gil_enabled(), reason="without a GIL, threads suit CPU work")
def test_a_busy_machine_does_not_turn_the_advice_upside_down(busy_machine):
    cpu = cw.advise(cpu_task, [300_000] * 6, workers=2)
    assert cpu.engine in ("process", "interpreter"), cpu
    waiting = cw.advise(wait_task, range(8), workers=4)
    assert waiting.engine == "thread", waiting
    assert "wait" in waiting.reason


@pytest.mark.skipif(not gil_enabled(), reason="without a GIL, threads suit CPU work")
def test_a_busy_machine_does_not_turn_auto_upside_down(busy_machine):
    from corework.api import auto

    assert cw.map(cpu_task, [300_000] * 4) == [cpu_task(300_000)] * 4
    assert cw.map(wait_task, range(4)) == list(range(4))
    assert auto.remembered(cpu_task).waits is False
    assert auto.remembered(wait_task).waits is True
