"""The ``"corework"`` joblib backend with real scikit-learn: the same scores as joblib's
default backend, a crash that costs one task, and joblib's hints honoured."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time

import pytest

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

import corework as cw  # noqa: E402
import corework.joblib  # noqa: E402  (registers the backend)
from tests.helpers import ROOT_ENV, gone_within  # noqa: E402
from tests.sklearn_tasks import (  # noqa: E402
    CrashOnce,
    crash_if,
    marker,
    nested_corework,
    nested_jobs,
    pid,
    set_marker,
    sleep,
)

GRID = {"C": [1.0, 10.0, 100.0]}


@pytest.fixture(autouse=True)
def no_kept_pool():
    """Each test ends the workers the backend keeps for the next call (the leftover check
    runs after this)."""
    yield
    corework.joblib.shutdown()


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


def search(X, y, **estimator):
    return GridSearchCV(CrashOnce(**estimator), GRID, cv=3, n_jobs=2).fit(X, y)


LOKY_BASELINE = """
import sys
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.svm import SVC
from tests.test_joblib import search
X, y = load_digits(return_X_y=True)
cv = cross_val_score(SVC(gamma=0.001), X, y, cv=4, n_jobs=2)
grid = search(X, y).cv_results_["mean_test_score"]
print(repr([list(map(float, cv)), list(map(float, grid))]))
"""


@pytest.fixture(scope="module")
def loky_scores():
    """The scores on joblib's default backend (loky), computed in a child interpreter:
    loky's reusable workers and memmapping folders outlive any call, not that child."""
    done = subprocess.run([sys.executable, "-c", LOKY_BASELINE], capture_output=True,
                          text=True, timeout=300, env=ROOT_ENV)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.splitlines()[-1])


def test_registered_on_import():
    assert "corework" in joblib.parallel.BACKENDS
    del joblib.parallel.BACKENDS["corework"]
    corework.joblib.register()
    assert joblib.parallel.BACKENDS["corework"] is corework.joblib.CoreworkBackend


def test_cross_val_score_and_grid_search_score_as_joblib_default(digits, loky_scores):
    X, y = digits
    expected_cv, expected = loky_scores
    with joblib.parallel_config(backend="corework", n_jobs=2):
        got_cv = cross_val_score(SVC(gamma=0.001), X, y, cv=4, n_jobs=2)
        got = search(X, y)
    assert list(map(float, got_cv)) == expected_cv
    assert list(map(float, got.cv_results_["mean_test_score"])) == expected
    assert got.best_params_ == {"C": GRID["C"][expected.index(max(expected))]}


def test_a_crash_costs_its_task_not_the_pool_and_a_retry_saves_the_search(digits, tmp_path,
                                                                          loky_scores):
    X, y = digits
    expected = loky_scores[1]
    flag = tmp_path / "crash"
    with joblib.parallel_config(backend="corework", n_jobs=2):
        flag.touch()
        with pytest.raises(cw.WorkerCrashed):
            search(X, y, crash_file=str(flag))  # joblib sees the crash
        assert not flag.exists()
        again = search(X, y, crash_file=str(flag))  # the same backend goes on
    with joblib.parallel_config(backend="corework", n_jobs=2, retries=1):
        flag.touch()
        retried = search(X, y, crash_file=str(flag))
        assert not flag.exists()  # it did crash once
    for result in (again, retried):
        assert list(map(float, result.cv_results_["mean_test_score"])) == expected


def test_threads_when_preferred_or_shared_memory_required():
    here = os.getpid()
    with joblib.parallel_config(backend="corework", n_jobs=2):
        default = joblib.Parallel()(joblib.delayed(pid)() for _ in range(4))
        threads = joblib.Parallel(prefer="threads")(joblib.delayed(pid)() for _ in range(4))
        shared = joblib.Parallel(require="sharedmem")(joblib.delayed(pid)() for _ in range(4))
    assert here not in default
    assert set(threads) == {here} and set(shared) == {here}


def test_nested_calls_do_not_oversubscribe():
    with joblib.parallel_config(backend="corework", n_jobs=2, inner_max_num_threads=1):
        inner = joblib.Parallel()(joblib.delayed(nested_jobs)() for _ in range(2))
    assert inner == [(1, 1), (1, 1)]


def test_timeout_fails_the_batch_that_runs_too_long():
    started = time.monotonic()
    with joblib.parallel_config(backend="corework", n_jobs=2, timeout=1), \
            pytest.raises(cw.TaskTimeout):
        joblib.Parallel()(joblib.delayed(sleep)(s) for s in (0.1, 60))
    assert time.monotonic() - started < 30


def test_successive_calls_of_one_shape_reuse_the_workers():
    with joblib.parallel_config(backend="corework", n_jobs=2):
        first = set(joblib.Parallel()(joblib.delayed(pid)() for _ in range(8)))
        second = set(joblib.Parallel()(joblib.delayed(pid)() for _ in range(8)))
    with joblib.parallel_config(backend="corework", n_jobs=2, retries=1):  # another shape
        other = set(joblib.Parallel()(joblib.delayed(pid)() for _ in range(8)))
    assert second <= first
    assert not other & first, "another shape got the same workers"
    corework.joblib.shutdown()  # the first shape's pool ends on its own, not waited for
    assert gone_within(first | other, seconds=10)



class _Watched(corework.joblib.CoreworkBackend):
    """The backend, noting each batch size joblib reports done."""

    sizes: list[int] = []  # noqa: RUF012 - one list for the test, on purpose

    def batch_completed(self, batch_size, duration):
        self.sizes.append(batch_size)
        super().batch_completed(batch_size, duration)


def test_tiny_tasks_are_batched_and_each_call_starts_small():
    backend = _Watched()
    with joblib.parallel_config(backend=backend, n_jobs=2):
        results = joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(3000))
        assert results == list(range(3000))
        assert max(backend.sizes) > 1
        assert backend.compute_batch_size() == 1  # the next call measures afresh


def test_a_crash_leaves_a_kept_pool_usable_for_the_next_call(tmp_path):
    flag = tmp_path / "crash"
    flag.touch()
    with joblib.parallel_config(backend="corework", n_jobs=2):
        with pytest.raises(cw.WorkerCrashed):
            joblib.Parallel()(joblib.delayed(crash_if)(str(flag)) for _ in range(2))
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]


def test_a_call_in_another_thread_keeps_its_pool_when_the_shape_changes():
    """Two threads' calls of different shapes, and one that fails: none cancels the
    other's work on a kept pool."""
    import threading

    results = {}

    def long_call():
        with joblib.parallel_config(backend="corework", n_jobs=2):
            results["long"] = joblib.Parallel()(
                joblib.delayed(sleep)(0.2 if i == 0 else 0.0) for i in range(4))

    worker = threading.Thread(target=long_call)
    worker.start()
    with joblib.parallel_config(backend="corework", n_jobs=2, retries=1):  # another shape
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    with joblib.parallel_config(backend="corework", n_jobs=2), pytest.raises(ValueError):
        joblib.Parallel()(joblib.delayed(int)(x) for x in ["1", "x"])
    worker.join(60)
    assert results["long"] == [0.2, 0.0, 0.0, 0.0]


def test_a_forked_child_gets_its_own_pool():
    with joblib.parallel_config(backend="corework", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    pid = os.fork()
    if pid == 0:
        try:
            with joblib.parallel_config(backend="corework", n_jobs=2):
                ok = joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
            corework.joblib.shutdown()
            os._exit(0 if ok else 1)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child's Parallel call hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_initializer_through_parallel_and_parallel_config():
    delayed = joblib.delayed
    ran = joblib.Parallel(n_jobs=2, backend="corework", initializer=set_marker,
                          initargs=("parallel",))(delayed(marker)(i) for i in range(4))
    assert ran == ["parallel"] * 4
    with joblib.parallel_config(backend="corework", n_jobs=2, initializer=set_marker,
                                initargs=("config",)):
        assert joblib.Parallel()(delayed(marker)(i) for i in range(4)) == ["config"] * 4
    # a call without one gets workers nobody set up (not the initialised ones)
    assert joblib.Parallel(n_jobs=2, backend="corework")(
        delayed(marker)(i) for i in range(4)) == [None] * 4


def test_joblib_memmapping_options_are_accepted_and_unknown_ones_refused():
    numpy = pytest.importorskip("numpy")
    big = numpy.arange(1_000_000, dtype=numpy.float64)
    sums = joblib.Parallel(n_jobs=2, backend="corework", max_nbytes="1K", mmap_mode="r",
                           temp_folder="/nonexistent")(
        joblib.delayed(numpy.sum)(big) for _ in range(3))
    assert sums == [big.sum()] * 3
    with pytest.raises(TypeError, match="does not take 'frobnicate'"):
        with joblib.parallel_config(backend="corework", frobnicate=1):
            joblib.Parallel()(joblib.delayed(abs)(1) for _ in range(2))


def test_a_nested_corework_parallel_finds_the_backend_in_the_worker():
    got = joblib.Parallel(n_jobs=2, backend="corework")(
        joblib.delayed(nested_corework)(n) for n in range(4))
    assert got == [[abs(-i) for i in range(n)] for n in range(4)]
