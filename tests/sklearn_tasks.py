"""A scikit-learn classifier that crashes its process once, and joblib task functions,
importable by name in any worker."""

from __future__ import annotations

import os
import time

import joblib
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC


class CrashOnce(ClassifierMixin, BaseEstimator):
    """An SVC whose fit with ``C == crash_at`` kills its process the first time any process
    fits it (the one that removes ``crash_file`` crashes; later fits find it gone)."""

    def __init__(self, C: float = 1.0, crash_file: str | None = None,
                 crash_at: float = 10.0) -> None:
        self.C = C
        self.crash_file = crash_file
        self.crash_at = crash_at

    def fit(self, X, y):
        if self.crash_file is not None and self.C == self.crash_at:
            try:
                os.remove(self.crash_file)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)  # as a segfault in native code would: no exception, no cleanup
        self.svc_ = SVC(C=self.C, gamma=0.001).fit(X, y)
        self.classes_ = self.svc_.classes_
        return self

    def predict(self, X):
        return self.svc_.predict(X)


def pid(_: object = None) -> int:
    return os.getpid()


def nested_jobs(_: object = None) -> tuple[int, int]:
    """How many jobs a Parallel call inside a task gets when it does not say (``n_jobs``
    left out), and BLAS's thread cap here."""
    from threadpoolctl import threadpool_info

    caps = [info["num_threads"] for info in threadpool_info()] or [1]
    with joblib.Parallel() as parallel:
        return parallel._effective_n_jobs(), max(caps)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def crash_if(flag: str) -> None:
    """End this process if ``flag`` exists (removing it: the next call finds it gone)."""
    try:
        os.remove(flag)
    except FileNotFoundError:
        return
    os._exit(1)


def set_marker(value: str) -> None:
    """An initializer: leaves ``value`` where :func:`marker` finds it."""
    os.environ["COREWORK_TEST_MARKER"] = value


def marker(_: object = None) -> str | None:
    return os.environ.get("COREWORK_TEST_MARKER")


def nested_corework(n: int) -> list[int]:
    """A ``Parallel(backend="corework")`` inside a task (the backend must be known there)."""
    return joblib.Parallel(n_jobs=2, backend="corework")(
        joblib.delayed(abs)(-i) for i in range(n))
