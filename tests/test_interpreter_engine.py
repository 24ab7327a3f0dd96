"""The interpreter engine: sub-interpreters with their own GIL (Python 3.12+)."""

from __future__ import annotations

import sys

import pytest

import corework as cw
from tests import light_tasks as tasks

needs_subinterpreters = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sub-interpreters with their own GIL need 3.12+")
interruptible = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="3.12's sub-interpreters cannot load ctypes, so a "
    "running task cannot be interrupted there")


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="checks the error before 3.12")
def test_before_312_the_engine_says_what_it_needs():
    with pytest.raises(cw.EngineUnavailable, match=r"needs Python 3\.12"):
        cw.Pool(2, engine="interpreter")


@needs_subinterpreters
def test_the_whole_api_runs_on_sub_interpreters():
    offset = 10
    with cw.Pool(2, engine="interpreter") as pool:
        assert list(pool.map(tasks.square, range(20))) == [x * x for x in range(20)]
        assert sorted(pool.imap(tasks.square, range(50), ordered=False)) == sorted(
            x * x for x in range(50))
        assert pool.submit(lambda x: x + offset, 1).result() == 11  # closures by value
        assert list(pool.starmap(pow, [(2, 3), (3, 2)])) == [8, 9]
    assert cw.map(tasks.square, range(5), engine="interpreter") == [0, 1, 4, 9, 16]


@needs_subinterpreters
def test_errors_keep_their_type_task_and_remote_traceback():
    with cw.Pool(2, engine="interpreter") as pool:
        with pytest.raises(ValueError, match="bad item 3") as info:
            list(pool.map(tasks.fail_on, range(6)))
        assert info.value.__notes__[0].startswith("raised by task 3 ")
        assert "in fail_on" in str(info.value.__cause__)
        assert pool.submit(tasks.square, 4).result() == 16  # the pool goes on


@needs_subinterpreters
def test_tasks_run_at_the_same_time(tmp_path):
    with cw.Pool(2, engine="interpreter", timeout=60) as pool:
        first = pool.submit(tasks.meet, "a", "b", str(tmp_path))
        second = pool.submit(tasks.meet, "b", "a", str(tmp_path))
        assert (first.result(), second.result()) == ("a", "b")


@needs_subinterpreters
def test_the_initializer_runs_in_every_sub_interpreter():
    with cw.Pool(2, engine="interpreter", initializer=tasks.count_setup,
                 initargs=(41,)) as pool:
        assert set(pool.map(tasks.counter, range(8))) == {41}


@needs_subinterpreters
def test_modules_sub_interpreters_cannot_load_get_a_clear_error():
    pytest.importorskip("numpy")
    with cw.Pool(1, engine="interpreter") as pool:
        with pytest.raises(ImportError, match=r"numpy\S* cannot be imported .* engine='process'"):
            pool.submit(tasks.uses_numpy).result()
        with pytest.raises(ImportError, match="sub-interpreter"):
            pool.submit(tasks.uses_numpy).result()  # and again, not a confusing KeyError
        assert pool.submit(tasks.square, 3).result() == 9


@needs_subinterpreters
def test_memory_limits_are_refused():
    with pytest.raises(ValueError, match="memory_limit needs engine='process'"):
        cw.Pool(2, engine="interpreter", memory_limit="1GiB")


@needs_subinterpreters
@interruptible
def test_a_hung_task_times_out_and_the_pool_goes_on():
    with cw.Pool(2, engine="interpreter", timeout=0.5) as pool:
        futures = [pool.submit(tasks.hang if x == 1 else tasks.square, x) for x in range(4)]
        with pytest.raises(cw.TaskTimeout):
            futures[1].result()
        assert [f.result() for i, f in enumerate(futures) if i != 1] == [0, 4, 9]
        assert pool.submit(tasks.square, 5).result() == 25


@needs_subinterpreters
@interruptible
def test_kill_interrupts_a_running_task():
    with cw.Pool(1, engine="interpreter") as pool:
        future = pool.submit(tasks.hang)
        assert pool.submit(tasks.square, 2)  # queued behind it
        while not future.running():
            pass
        future.kill()
        with pytest.raises(cw.Cancelled):
            future.result()
        assert pool.submit(tasks.square, 6).result() == 36
