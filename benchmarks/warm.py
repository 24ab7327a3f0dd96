"""Workers of a scikit-learn caller: corework against multiprocessing and loky (joblib).

    python -m benchmarks.warm [--repeats 5]

Each figure is the median over ``--repeats`` fresh interpreters (a script that has
already imported scikit-learn, numpy and scipy; their import is not timed):

* **pool**: ``Pool(2)`` + the first result of 4 tiny tasks defined in a module that
  imports scikit-learn. corework's first pool in a process, then a pool once the
  launcher has imported what the caller had (it does so on a core the workers leave
  free, or before a later pool's workers); multiprocessing's fork pool; loky's first
  reusable-executor call.
* **tiny**: ``Parallel(n_jobs=2)(delayed(f)(i) for i in range(5000))``, after one call
  that started the workers (both backends keep them).
* **grid**: ``GridSearchCV(SVC(), 4 C x 5 folds, n_jobs=2).fit`` on load_digits, once,
  and three fits in a row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy, scipy, sklearn.ensemble, sklearn.svm
from benchmarks.sklearn_task import echo
figures = {{}}
"""

CASES = {
    "pool": """
        import corework as cw, multiprocessing
        from corework.engines.process import launcher as _launcher
        def timed(make):
            t = time.perf_counter()
            with make() as pool:
                list(pool.map(echo, range(4)))
            return time.perf_counter() - t
        if MODE == "corework":
            figures["corework first pool"] = timed(lambda: cw.Pool(2, engine="process"))
            _launcher._client.wait_warm(60)
            figures["corework warm pool"] = timed(lambda: cw.Pool(2, engine="process"))
        elif MODE == "mp":
            figures["multiprocessing fork"] = timed(
                lambda: multiprocessing.get_context("fork").Pool(2))
        else:
            from joblib.externals.loky import get_reusable_executor
            t = time.perf_counter()
            list(get_reusable_executor(2).map(echo, range(4)))
            figures["loky first call"] = time.perf_counter() - t
    """,
    "tiny": """
        import joblib
        if MODE == "corework":
            import corework.joblib
        backend = "corework" if MODE == "corework" else "loky"
        def f(i):
            return i * i
        def call():
            t = time.perf_counter()
            joblib.Parallel(n_jobs=2, backend=backend)(joblib.delayed(f)(i) for i in range(5000))
            return time.perf_counter() - t
        figures[f"{backend} first call"] = call()
        figures[f"{backend} next call"] = statistics.median(call() for _ in range(5))
    """,
    "grid": """
        import joblib, statistics
        from sklearn.datasets import load_digits
        from sklearn.model_selection import GridSearchCV
        if MODE == "corework":
            import corework.joblib
        backend = "corework" if MODE == "corework" else "loky"
        X, y = load_digits(return_X_y=True)
        def fit():
            t = time.perf_counter()
            with joblib.parallel_config(backend=backend, n_jobs=2):
                GridSearchCV(sklearn.svm.SVC(), {"C": [0.1, 1, 10, 100]}, cv=5,
                             n_jobs=2).fit(X, y)
            return time.perf_counter() - t
        figures[f"{backend} one fit"] = fit()
        figures[f"{backend} three more fits"] = fit() + fit() + fit()
    """,
}
MODES = {"pool": ("corework", "mp", "loky"), "tiny": ("corework", "loky"),
         "grid": ("corework", "loky")}


def run_once(case: str, mode: str) -> dict[str, float]:
    code = PRELUDE.format(root=str(ROOT)) + f"MODE = {mode!r}\nimport statistics\n" \
        + textwrap.dedent(CASES[case]) + "\nprint(json.dumps(figures))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{case}/{mode} failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    for case in args.cases:
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for mode in MODES[case]:
                for name, seconds in run_once(case, mode).items():
                    runs.setdefault(name, []).append(seconds)
        medians = {name: statistics.median(values) for name, values in runs.items()}
        print(f"\n{case} (median of {args.repeats})")
        for name, seconds in medians.items():
            print(f"  {name:28} {seconds * 1000:9.1f} ms")
        for ours, theirs in _ratios(case, medians):
            print(f"  {ours} / {theirs}: {medians[ours] / medians[theirs]:.2f}")


def _ratios(case: str, medians: dict[str, float]) -> list[tuple[str, str]]:
    if case == "pool":
        return [(o, t) for o in ("corework first pool", "corework warm pool")
                for t in ("multiprocessing fork", "loky first call")]
    return [(f"corework {kind}", f"loky {kind}") for kind in
            (("first call", "next call") if case == "tiny" else ("one fit", "three more fits"))]


if __name__ == "__main__":
    main()
