"""A task's exception reaches the caller as itself, naming the task, with the worker's
traceback; things that cannot be sent are refused with a message naming them."""

from __future__ import annotations

import os
import signal
import threading

import pytest

import corework as cw
from tests.helpers import (
    Unprintable,
    Unrebuildable,
    fail_on,
    raise_unprintable,
    raise_unrebuildable,
    square,
)


def test_task_exception_keeps_its_type_and_names_the_task(engine):
    with pytest.raises(ValueError, match="bad item 3") as info:
        cw.map(fail_on, range(10), engine=engine, workers=2)
    assert "raised by task 3 (item 3)" in info.value.__notes__


def test_process_errors_carry_the_worker_traceback_as_cause():
    with pytest.raises(ValueError) as info:
        cw.map(fail_on, range(10), engine="process", workers=2)
    cause = info.value.__cause__
    assert isinstance(cause, cw.RemoteTraceback)
    assert "in fail_on" in cause.tb and "ValueError: bad item 3" in cause.tb


def test_exception_that_cannot_be_rebuilt_becomes_task_error():
    with pytest.raises(cw.TaskError, match="Unrebuildable") as info:
        cw.map(raise_unrebuildable, [1], engine="process")
    assert info.value.type_name == Unrebuildable.__qualname__
    assert "task 0" in str(info.value)


def test_an_exception_whose_str_raises_fails_its_task_not_the_worker(engine):
    with cw.Pool(1, engine=engine) as pool:
        with pytest.raises((Unprintable, cw.TaskError)) as info:
            pool.submit(raise_unprintable, 1).result(timeout=60)
        assert not isinstance(info.value, cw.WorkerCrashed)
        assert pool.submit(square, 3).result(timeout=60) == 9


def test_failed_submit_reraises_from_future(engine):
    with cw.Pool(2, engine=engine) as pool:
        future = pool.submit(fail_on, 3)
        with pytest.raises(ValueError, match="bad item 3"):
            future.result()
        assert pool.submit(square, 4).result() == 16  # the pool goes on


def test_unpicklable_argument_is_refused_at_submit_time():
    with cw.Pool(1, engine="process") as pool:
        with pytest.raises(cw.SerializationError, match=r"_thread\.lock") as info:
            pool.submit(square, threading.Lock())
    assert isinstance(info.value, TypeError)
    assert "engine='thread'" in str(info.value)


def test_unpicklable_item_in_map_names_the_item():
    items = [1, 2, threading.Lock()]
    with pytest.raises(cw.SerializationError, match=r"task 2 \(item <unlocked"):
        cw.map(square, items, engine="process", chunksize=1)


def test_unpicklable_function_is_refused_with_its_name():
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(cw.SerializationError, match="uses_lock"):
        cw.map(uses_lock, [1], engine="process")


def test_unpicklable_arguments_are_fine_on_threads():
    lock = threading.Lock()
    assert cw.map(lambda held: held is lock, [lock], engine="thread") == [True]


def test_unpicklable_result_fails_only_its_task():
    with cw.Pool(1, engine="process") as pool:
        future = pool.submit(threading.Lock)
        with pytest.raises(cw.SerializationError, match="could not be pickled in the worker"):
            future.result()
        assert pool.submit(square, 3).result() == 9


def test_system_exit_in_a_task_fails_that_task_only(engine):
    def leave(_):
        raise SystemExit(4)

    with cw.Pool(1, engine=engine) as pool:
        with pytest.raises(SystemExit):
            pool.submit(leave, 1).result()
        assert pool.submit(square, 2).result() == 4


def test_error_tree():
    assert issubclass(cw.TaskTimeout, TimeoutError)
    assert issubclass(cw.PoolClosed, RuntimeError)
    for error in (cw.TaskError, cw.TaskTimeout, cw.WorkerCrashed, cw.Cancelled,
                  cw.SerializationError, cw.InitializerFailed, cw.PoolClosed):
        assert issubclass(error, cw.CoreworkError)


def test_a_crashed_worker_fails_its_task_and_the_pool_goes_on():
    with cw.Pool(1, engine="process") as pool:
        first_pid = pool._pids()
        with pytest.raises(cw.WorkerCrashed, match="exit code 3") as info:
            pool.submit(os._exit, 3).result()
        assert info.value.exitcode == 3
        assert "while running the call _exit(3)" in info.value.__notes__
        assert pool.submit(square, 5).result() == 25
        assert pool._pids() != first_pid  # replaced


def test_a_worker_killed_by_a_signal_is_named_by_signal():
    with pytest.raises(cw.WorkerCrashed, match="SIGKILL") as info:
        cw.map(_kill_self, [0], engine="process")
    assert "while running task 0 (item 0)" in info.value.__notes__


def _kill_self(_):
    os.kill(os.getpid(), signal.SIGKILL)
