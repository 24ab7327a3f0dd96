"""GridSearchCV wall time on load_digits: joblib's default backend (loky) vs corework's,
with and without a worker crash injected (one fit calls os._exit once).

    python benchmarks/joblib_gridsearch.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import joblib
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import corework.joblib  # noqa: F401
from tests.sklearn_tasks import CrashOnce

GRID = {"C": [0.1, 1.0, 10.0, 100.0]}


def run(backend: str, crash: bool, jobs: int, **options: object) -> str:
    X, y = load_digits(return_X_y=True)
    with tempfile.TemporaryDirectory() as folder:
        flag = Path(folder, "crash")
        if crash:
            flag.touch()
        search = GridSearchCV(CrashOnce(crash_file=str(flag)), GRID, cv=5, n_jobs=jobs)
        started = time.perf_counter()
        try:
            with joblib.parallel_config(backend=backend, n_jobs=jobs, **options):
                search.fit(X, y)
            outcome = f"best {search.best_score_:.4f}"
        except Exception as exc:
            outcome = f"failed: {type(exc).__name__}"
        return f"{time.perf_counter() - started:6.2f} s  {outcome}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    jobs = parser.parse_args().jobs
    for crash in (False, True):
        print(f"crash={crash!s:5}  loky               {run('loky', crash, jobs)}")
        print(f"crash={crash!s:5}  corework           {run('corework', crash, jobs)}")
        print(f"crash={crash!s:5}  corework retries=1 "
              f"{run('corework', crash, jobs, retries=1)}")


if __name__ == "__main__":
    main()
