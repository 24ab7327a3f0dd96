"""``python -m tests.peers [--suite NAME ...]``: run the peers' own suites on corework.

Each suite runs in its own pytest process, in an empty directory (none of this
repository's pytest settings apply), bounded per test (``--test-timeout``) and per suite
(``--timeout``: its process group is killed, and the suite fails). Prints, per suite::

    == joblib-default: joblib 1.6.0 joblib.test.test_parallel, corework as the default
       backend: P passed, S skipped, D deselected (listed in peer_skips.py)

then each failure's line. Exit status 1 if any test failed or a suite could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .peer_plugin import SUITE, SWAP
from .peer_skips import SKIPS

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "corework" / "peers"


@dataclass(frozen=True)
class Suite:
    """A peer's tests: which package, what to collect, and how corework stands in."""

    name: str
    package: str
    swap: str
    what: str  # said in the summary line
    targets: Callable[[], list[str]]  # pytest's arguments that collect the tests


def _installed(module: str, *extra: str) -> Callable[[], list[str]]:
    return lambda: ["--pyargs", module, *extra]


def _tqdm_tests() -> list[str]:
    """tqdm's tests_concurrent.py, from the installed version's sdist (fetched once)."""
    version = importlib.metadata.version("tqdm")
    folder = CACHE / f"tqdm-{version}"
    tests = folder / "tests" / "tests_concurrent.py"
    if not tests.exists():
        _fetch_sdist("tqdm", version, folder)
    return [str(tests)]


def _fetch_sdist(name: str, version: str, folder: Path) -> None:
    """Download ``name==version``'s sdist with pip and unpack it as ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", f"{name}=={version}", "-d", download],
                       check=True, timeout=300)
        [archive] = Path(download).glob("*.tar.gz")
        with tarfile.open(archive) as sdist:
            top = sdist.getnames()[0].split("/", 1)[0]
            try:
                sdist.extractall(download, filter="data")  # type: ignore[call-arg]
            except TypeError:  # a CPython from before extraction filters: PyPI's sdist
                sdist.extractall(download)
        os.replace(Path(download) / top, folder)


SUITES = [
    Suite("joblib-default", "joblib", "joblib-default",
          "joblib.test.test_parallel, corework as the default backend",
          _installed("joblib.test.test_parallel")),
    Suite("joblib-beside-loky", "joblib", "joblib-beside-loky",
          "test_parallel and test_memmapping, a corework case beside each loky case",
          _installed("joblib.test.test_parallel", "joblib.test.test_memmapping",
                     "-k", "corework")),
    Suite("sklearn", "scikit-learn", "joblib-default",
          "sklearn.utils.tests.test_parallel, corework as joblib's default backend",
          _installed("sklearn.utils.tests.test_parallel")),
    Suite("tqdm", "tqdm", "executors",
          "tests_concurrent.py (sdist), corework.futures' executors as concurrent.futures'",
          _tqdm_tests),
    Suite("dask-executor", "dask", "dask-executor",
          "dask.tests.test_multiprocessing, corework.futures.ProcessPoolExecutor as its pool",
          _installed("dask.tests.test_multiprocessing")),
    Suite("dask-pool", "dask", "dask-pool",
          "dask.tests.test_multiprocessing, a corework.Pool as dask's pool",
          _installed("dask.tests.test_multiprocessing")),
]

_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")


def run(suite: Suite, timeout: float, test_timeout: float) -> bool:
    """Run one suite; print its summary and failures; whether it passed."""
    try:
        version = importlib.metadata.version(suite.package)
        targets = suite.targets()
    except (importlib.metadata.PackageNotFoundError, OSError,
            subprocess.SubprocessError) as exc:
        print(f"== {suite.name}: cannot run ({type(exc).__name__}: {exc})", flush=True)
        return False
    path = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, SWAP: suite.swap, SUITE: suite.name,
           "PYTHONPATH": os.pathsep.join(filter(None, path))}
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               "-p", "peer_plugin", f"--timeout={test_timeout:g}", *targets]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as here:
        output, timed_out = _bounded(command, here, env, timeout)
    counts = _counts(output)
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    ok = not timed_out and not failures and counts.get("passed", 0) > 0
    said = ", ".join(f"{n} {word}" for word, n in counts.items())
    print(f"== {suite.name}: {suite.package} {version} {suite.what}: {said or 'no result'}"
          f"{' (timed out)' if timed_out else ''} in {time.monotonic() - started:.0f} s",
          flush=True)
    for line in failures:
        print(f"   {line}")
    for name, reason in SKIPS.get(suite.name, {}).items():
        print(f"   listed: {name}: {reason}")
    if not ok and not failures:
        print("\n".join(output.splitlines()[-30:]))
    return ok


def _bounded(command: list[str], cwd: str, env: dict[str, str], timeout: float
             ) -> tuple[str, bool]:
    """Run ``command``; its output, and whether it was killed at ``timeout``."""
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as child:
        try:
            output, _ = child.communicate(timeout=timeout)
            return output, False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            try:  # bounded too: a process outside the group may hold the pipe
                output, _ = child.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                output = ""
            return output, True


def _counts(output: str) -> dict[str, int]:
    lines = [line for line in output.splitlines() if " in " in line and "passed" in line]
    return {word: int(n) for n, word in _SUMMARY.findall(lines[-1])} if lines else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers", description=__doc__)
    parser.add_argument("--suite", action="append", choices=[s.name for s in SUITES],
                        help="run only this suite (again for more); default: all")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a suite may take (default: 600)")
    parser.add_argument("--test-timeout", type=float, default=120.0,
                        help="seconds one test may take (default: 120)")
    args = parser.parse_args(argv)
    chosen = [s for s in SUITES if args.suite is None or s.name in args.suite]
    results = [run(suite, args.timeout, args.test_timeout) for suite in chosen]
    return 0 if all(results) else 1
