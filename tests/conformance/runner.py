"""``python -m tests.conformance``: CPython's test_concurrent_futures on corework, per engine.

Runs each engine's tests in a child process (``child``), bounded per test
(``--test-timeout``: the child dumps every thread's stack and ends; the test counts as
failed and a new child runs the rest) and per engine (``--timeout``: the child's process
group is killed). Prints, per engine::

    == CPython 3.13.0, engine process: CPython test_concurrent_futures: P/N pass (S skipped by list)

then each failure with its last line (full output: ``--log-dir``), and the time taken.
Exit status 1 if a test failed, 0 otherwise — also when this Python has no
``test.test_concurrent_futures`` (some distributions leave it out), which it says.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import swap

#: Children one engine may need (each after a test that hung or crashed its child).
MAX_CHILDREN = 20
#: Seconds a child may take to exit once every test has run (pools left to the garbage
#: collector, and those the exit hooks finish, must not hold the interpreter's exit).
EXIT_GRACE = 30.0
HUNG_AT_EXIT = -1000
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class EngineRun:
    engine: str
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    children: int = 0
    incomplete: str = ""  # why the run stopped before every test ran

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o["status"] == status)

    @property
    def failures(self) -> list[str]:
        return [name for name, o in self.outcomes.items() if o["status"] == "fail"]

    def summary(self) -> str:
        passed, failed = self.count("pass"), self.count("fail")
        listed, skipped = self.count("listed"), self.count("skip")
        line = (f"CPython test_concurrent_futures: {passed}/{passed + failed} pass "
                f"({listed} skipped by list)")
        if skipped:
            line += f", {skipped} skipped by the tests' own conditions"
        return line


def available_engines() -> list[str]:
    import corework.futures

    engines = ["process", "thread"]
    if hasattr(corework.futures, "InterpreterPoolExecutor"):
        engines.append("interpreter")
    return engines


def run_engine(engine: str, args: argparse.Namespace, log: Path) -> EngineRun:
    run = EngineRun(engine)
    started = time.monotonic()
    deadline = started + args.timeout
    with tempfile.TemporaryDirectory(prefix="corework-conformance-") as scratch:
        events, done = Path(scratch, "events.jsonl"), Path(scratch, "done.txt")
        events.touch()
        with open(log, "w", encoding="utf-8") as out:
            while run.children < MAX_CHILDREN:
                done.write_text("".join(f"{name}\n" for name in run.outcomes))
                command = [sys.executable, "-X", "faulthandler", "-m", "tests.conformance.child",
                           "--engine", engine, "--events", str(events), "--done", str(done),
                           "--test-timeout", str(args.test_timeout)]
                command += [arg for pattern in args.patterns for arg in ("-k", pattern)]
                run.children += 1
                code = _run_child(command, out, deadline, events)
                current, last, ended = _read_events(events, run)
                if ended:
                    if code == HUNG_AT_EXIT:
                        run.outcomes["(interpreter exit after the last test)"] = {
                            "status": "fail", "seconds": EXIT_GRACE, "altered": False,
                            "detail": f"the child did not exit within {EXIT_GRACE:g} s of "
                                      "its last test; faulthandler dumped the stacks into "
                                      "the log\n"}
                    elif code:
                        run.outcomes["(interpreter exit after the last test)"] = {
                            "status": "fail", "seconds": 0.0, "altered": False,
                            "detail": f"the child ended with {_describe(code)}\n"}
                    break
                if current is None:  # it died between tests: in a fixture or a cleanup
                    current = f"(after {last or 'no test'}: fixtures and cleanups)"
                    if current in run.outcomes:
                        run.incomplete = f"a child ended twice in {current}"
                        break
                why = ("ran past --timeout" if code is None else
                       f"ran past --test-timeout ({args.test_timeout:g} s); faulthandler "
                       "dumped the stacks into the log" if code == 1 else
                       f"ended its process with {_describe(code)}")
                run.outcomes[current] = {"status": "fail", "detail": f"it {why}\n",
                                         "seconds": 0.0, "altered": False}
                if code is None:
                    run.incomplete = f"the engine's run took longer than {args.timeout:g} s"
                    break
            else:
                run.incomplete = f"{MAX_CHILDREN} children ended early"
    run.seconds = time.monotonic() - started
    return run


def _run_child(command: list[str], out: Any, deadline: float, events: Path) -> int | None:
    """Run one child; its exit code, or None if it was killed at ``deadline``, or
    HUNG_AT_EXIT if it reported its last test but did not exit in EXIT_GRACE seconds."""
    child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    ended_at = None
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return child.wait(timeout=1.0)
            now = time.monotonic()
            if ended_at is None and _ended(events):
                ended_at = now
            if ended_at is not None and now > ended_at + EXIT_GRACE:
                _stop(child)
                return HUNG_AT_EXIT
            if now > deadline:
                _stop(child)
                return None
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything the child left behind
            os.killpg(child.pid, signal.SIGKILL)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGABRT first: faulthandler dumps every thread's stack into the log."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGABRT)
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _ended(events: Path) -> bool:
    with open(events, encoding="utf-8") as file:
        return any(line.startswith('{"event": "end"') for line in file)


def _read_events(path: Path, run: EngineRun) -> tuple[str | None, str | None, bool]:
    """Record the outcomes; return the test that started and never ended, the last test
    to end, and whether the child got to the end."""
    current, last, ended = None, None, False
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                break  # cut off mid-line by the child's end
            event = json.loads(line)
            if event["event"] == "start":
                current = event["test"]
            elif event["event"] == "outcome":
                run.outcomes[event["test"]] = event
                last = event["test"]
                if event["test"] == current:
                    current = None
            elif event["event"] == "end":
                ended = True
    return (current if current not in run.outcomes else None), last, ended


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def report(run: EngineRun, log: Path, verbose: bool) -> None:
    version = f"{platform.python_version()}{'t' if _free_threaded() else ''}"
    print(f"== CPython {version}, engine {run.engine}: {run.summary()}  "
          f"[{run.seconds:.0f} s]", flush=True)
    if run.incomplete:
        print(f"   incomplete: {run.incomplete}")
    for name in run.failures:
        outcome = run.outcomes[name]
        detail = str(outcome["detail"]).rstrip().splitlines() or ["?"]
        summary = " ".join(str(outcome.get("summary") or detail[-1]).split())
        print(f"   FAIL {name}: {summary[:300]}")
        if verbose:
            print("      " + "\n      ".join(detail))
    by_file: dict[str, float] = defaultdict(float)
    for outcome in run.outcomes.values():
        by_file[str(outcome.get("file", "(between tests)"))] += float(outcome["seconds"])
    print("   time per test file: " + ", ".join(
        f"{name} {seconds:.0f} s" for name, seconds in sorted(by_file.items(),
                                                               key=lambda item: -item[1])))
    slowest = sorted(run.outcomes.items(), key=lambda item: -float(item[1]["seconds"]))[:3]
    print("   slowest: " + ", ".join(f"{name} {float(o['seconds']):.1f} s"
                                      for name, o in slowest))
    altered = [name for name, o in run.outcomes.items() if o.get("altered")]
    if altered:
        print(f"   left threads or child processes behind ({len(altered)}): "
              + ", ".join(altered))
    print(f"   log: {log}")


def _free_threaded() -> bool:
    import sysconfig

    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", dest="engines", action="append", choices=swap.ENGINES,
                        help="run only this engine (repeatable); default: every one here")
    parser.add_argument("--test-timeout", type=float, default=60.0,
                        help="seconds one test may take (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one engine's run may take (default %(default)s)")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where each engine's full unittest output goes")
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only tests whose Class.method contains this (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each failure's whole traceback")
    args = parser.parse_args(argv)
    version = platform.python_version()
    if swap.find_tests() is None:
        print(f"== CPython {version}: CPython test_concurrent_futures: not run: this "
              f"distribution's Python has no test.test_concurrent_futures ({sys.executable})")
        return 0
    args.log_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    for engine in args.engines or available_engines():
        if engine not in available_engines():
            print(f"== CPython {version}, engine {engine}: not available on this Python")
            continue
        log = args.log_dir / f"corework-conformance-{version}-{engine}.log"
        run = run_engine(engine, args, log)
        report(run, log, args.verbose)
        failed = failed or bool(run.failures) or bool(run.incomplete)
    return 1 if failed else 0
