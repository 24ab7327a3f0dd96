"""corework.futures: the standard library's executors, one import away.

CPython's own tests of those executors run against these classes in tests/conformance
(``python -m tests.conformance``); here: what those tests leave out or cannot see.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import multiprocessing
import os
import sys
import threading
import time

import pytest

import corework
import corework.futures as cwf

from . import light_tasks

PAIRS = [(cwf.ProcessPoolExecutor, concurrent.futures.ProcessPoolExecutor),
         (cwf.ThreadPoolExecutor, concurrent.futures.ThreadPoolExecutor)]
if sys.version_info >= (3, 14):
    PAIRS.append((cwf.InterpreterPoolExecutor, concurrent.futures.InterpreterPoolExecutor))
EXECUTORS = [cwf.ProcessPoolExecutor, cwf.ThreadPoolExecutor]
if sys.version_info >= (3, 12):
    EXECUTORS.append(cwf.InterpreterPoolExecutor)


def _parameters(function: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda c: c.__name__)
def test_the_standard_librarys_signatures(ours, theirs):
    assert issubclass(ours, theirs)
    assert issubclass(ours, corework.Pool)
    assert _parameters(ours) == _parameters(theirs)
    for method in ("submit", "shutdown"):
        assert _parameters(getattr(ours, method)) == _parameters(getattr(theirs, method))
    extra = [] if sys.version_info >= (3, 14) else [  # 3.14's map on every Python
        ("buffersize", inspect.Parameter.KEYWORD_ONLY, None)]
    assert _parameters(ours.map) == _parameters(theirs.map) + extra


def test_all_names_what_this_python_has():
    expected = {"ProcessPoolExecutor", "ThreadPoolExecutor"}
    if sys.version_info >= (3, 12):
        expected.add("InterpreterPoolExecutor")
    assert set(cwf.__all__) == expected
    assert all(hasattr(cwf, name) for name in cwf.__all__)


def test_asyncio_takes_the_thread_one_as_its_default_executor():
    async def main():
        asyncio.get_running_loop().set_default_executor(executor)
        return await asyncio.get_running_loop().run_in_executor(None, pow, 2, 10)

    executor = cwf.ThreadPoolExecutor(2)
    try:
        assert asyncio.run(main()) == 1024  # asyncio.run shuts the executor down
    finally:
        executor.shutdown()


@pytest.mark.parametrize("cls", [cwf.ProcessPoolExecutor, cwf.ThreadPoolExecutor])
def test_max_workers_checked_and_defaulted_like_the_standard_library(cls):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            cls(max_workers=bad)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        cls(1, initializer=3)
    count = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    with cls() as executor:
        expected = count if cls is cwf.ProcessPoolExecutor else min(32, count + 4)
        assert executor._max_workers == executor.workers == expected


def test_thread_names_follow_the_prefix():
    def name():
        time.sleep(0.05)  # so that both threads take a task
        return threading.current_thread().name

    with cwf.ThreadPoolExecutor(2, thread_name_prefix="Special") as executor:
        names = {f.result() for f in [executor.submit(name) for _ in range(4)]}
    assert names == {"Special_0", "Special_1"}
    with cwf.ThreadPoolExecutor(1) as executor:
        assert executor.submit(name).result().startswith("ThreadPoolExecutor-")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")  # fork, 3.12+
@pytest.mark.parametrize(("method", "engine_method"),
                         [("fork", "fork-caller"), ("spawn", "spawn"), ("forkserver", "fork")])
def test_mp_context_picks_the_start_method(method, engine_method):
    """An explicit fork context forks from this process, as the standard library does;
    forkserver's workers come from corework's launcher."""
    context = multiprocessing.get_context(method)
    with cwf.ProcessPoolExecutor(1, mp_context=context) as executor:
        assert executor._mp_context is context
        assert executor._scheduler.engine.start_method == engine_method
        assert executor.submit(pow, 3, 2).result() == 9


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_max_tasks_per_child_as_in_the_standard_library():
    with pytest.raises(ValueError, match="incompatible with the 'fork'"):
        cwf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                max_tasks_per_child=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        cwf.ProcessPoolExecutor(1, max_tasks_per_child=0)
    with cwf.ProcessPoolExecutor(1, max_tasks_per_child=2) as executor:
        assert executor._mp_context.get_start_method() == "spawn"
        pids = [executor.submit(os.getpid).result() for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]


def test_a_failing_initializer_is_logged_and_breaks_the_pool(caplog):
    def fail():
        raise ValueError("no initializing today")

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        executor = cwf.ThreadPoolExecutor(1, initializer=fail)
        try:
            deadline = time.monotonic() + 10
            while not executor._broken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert "no initializing today" in executor._broken
            # as in the standard library, whose workers start on the first submit: that
            # one's future fails, and a later submit raises
            with pytest.raises(concurrent.futures.BrokenExecutor):
                executor.submit(int).result()
            with pytest.raises(concurrent.futures.BrokenExecutor):
                executor.submit(int)
        finally:
            executor.shutdown()
    assert any("Exception in initializer" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(sys.version_info < (3, 14), reason="3.14's interpreter-pool rules")
def test_the_interpreter_executor_keeps_3_14s_sharing_rules(caplog):
    from concurrent import interpreters
    from concurrent.futures.interpreter import BrokenInterpreterPool

    spam = 1

    def closure():
        return spam

    def thread_name():
        import _thread

        return _thread._get_name()

    with cwf.InterpreterPoolExecutor(1) as executor:
        with pytest.raises(interpreters.NotShareableError, match="args not shareable"):
            executor.submit(closure).result()
        with pytest.raises(ValueError, match="bad item 3") as raised:
            executor.submit(light_tasks.fail_on, 3).result()
        cause = raised.value.__cause__
        assert isinstance(cause, interpreters.ExecutionFailed)
        assert cause.excinfo.type.__name__ == "ValueError"
        assert cause.excinfo.msg == "bad item 3"
        assert "Uncaught in the interpreter:" in str(cause) and "fail_on" in str(cause)
        assert executor.submit(thread_name).result().startswith("InterpreterPoolExec"[:15])
        assert executor.submit(light_tasks.square, 3).result() == 9
    with cwf.InterpreterPoolExecutor(1, initializer=closure) as executor:
        future = executor.submit(light_tasks.square, 3)
    with pytest.raises(BrokenInterpreterPool) as broken:
        future.result()
    assert isinstance(broken.value, corework.InitializerFailed)
    assert "Exception in initializer" in caplog.text and "NotShareableError" in caplog.text


@pytest.mark.skipif(sys.version_info < (3, 14), reason="3.14 added **ctxkwargs")
def test_the_thread_executor_refuses_context_arguments_it_does_not_take():
    with pytest.raises(TypeError, match="unexpected keyword argument 'spam'"):
        cwf.ThreadPoolExecutor(1, spam=True)


@pytest.mark.parametrize("cls", EXECUTORS)
def test_the_initializer_runs_in_each_worker(cls):
    with cls(1, initializer=light_tasks.count_setup, initargs=(10,)) as executor:
        assert executor.submit(light_tasks.counter).result() == 10


def _nap(seconds, started=None):
    """Sleep in short steps: a thread task is interrupted between two of them."""
    if started is not None:
        started.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


def test_corework_extras_are_there():
    with cwf.ThreadPoolExecutor(1) as executor:
        started = threading.Event()
        future = executor.submit(_nap, 30, started)
        assert started.wait(10)
        assert future.kill()
        with pytest.raises(corework.Cancelled):
            future.result(10)
        with pytest.raises(corework.TaskTimeout):
            executor.options(timeout=0.2).submit(_nap, 30).result(10)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sub-interpreters are 3.12+")
def test_interpreter_pool():
    with cwf.InterpreterPoolExecutor(2) as executor:
        assert isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        assert isinstance(executor, cwf.ThreadPoolExecutor)
        assert list(executor.map(pow, [2, 3], [5, 2])) == [32, 9]
