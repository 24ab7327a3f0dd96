"""One engine's run of CPython's tests, in a process of its own (started by ``runner``).

Writes one JSON line per event to ``--events``: ``start`` when a test starts, ``outcome``
when it ends (``pass``, ``fail``, ``skip`` — skipped by the test's own condition — or
``listed``: on the skip list), and ``end`` when every test has run. A test that runs past
``--test-timeout`` seconds makes ``faulthandler`` dump every thread's stack to stderr and
end this process; the runner then counts that test as failed and starts another child for
the tests still to run (``--done`` lists those already reported).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import time
import traceback
import unittest
from collections.abc import Iterator
from typing import Any, TextIO

from . import swap
from .skips import reason_to_skip

#: Test classes outside the mixins that still test an engine's executor.
EXTRA_CLASSES = {"process": ("FailingInitializerResourcesTest",)}
_MIXINS = {
    "thread": ("ThreadPoolMixin",),
    "process": ("ProcessPoolForkMixin", "ProcessPoolSpawnMixin", "ProcessPoolForkserverMixin"),
    "interpreter": ("InterpreterPoolMixin",),
}


def short_id(test: unittest.TestCase) -> str:
    """``Class.method``: what the skip list and the report use."""
    method = getattr(test, "_testMethodName", None)
    return f"{type(test).__name__}.{method}" if method else str(test)


def flatten(suite: unittest.TestSuite | unittest.TestCase) -> Iterator[unittest.TestCase]:
    if isinstance(suite, unittest.TestSuite):
        for item in suite:
            yield from flatten(item)
    else:
        yield suite


def engine_mixins(engine: str) -> tuple[type, ...]:
    """The tests' mixin classes whose test classes belong to ``engine``."""
    util = swap.util_module()
    names = _MIXINS[engine]
    if engine == "interpreter" and not hasattr(util, "InterpreterPoolMixin"):
        names = _MIXINS["thread"]  # no interpreter-pool tests here: the thread-pool ones
    return tuple(getattr(util, name) for name in names if hasattr(util, name))


def belongs(test: unittest.TestCase, engine: str, mixins: tuple[type, ...]) -> bool:
    if type(test).__name__ == "_FailedTest":  # a test module that failed to import
        return True
    return isinstance(test, mixins) or type(test).__name__ in EXTRA_CLASSES.get(engine, ())


class _Events:
    def __init__(self, path: str) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")

    def write(self, **event: Any) -> None:
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()  # before a faulthandler exit, which flushes nothing


class _Result(unittest.TextTestResult):
    """A text result that also reports each outcome as an event, at once."""

    events: _Events
    test_timeout: float

    def startTest(self, test: unittest.TestCase) -> None:
        from test import support

        support.environment_altered = False
        self._status, self._detail, self._started = "pass", "", time.monotonic()
        self._summary = ""
        self.events.write(event="start", test=short_id(test))
        faulthandler.dump_traceback_later(self.test_timeout, exit=True)
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        from test import support

        # the time to the next test (module and class fixtures, cleanups) is bounded too
        faulthandler.dump_traceback_later(self.test_timeout, exit=True)
        super().stopTest(test)
        self.events.write(event="outcome", test=short_id(test), status=self._status,
                          detail=self._detail, summary=self._summary,
                          file=type(test).__module__.rpartition(".")[2],
                          seconds=time.monotonic() - self._started,
                          altered=bool(support.environment_altered))

    def _failed(self, test: unittest.TestCase, err: Any) -> None:
        text = "".join(traceback.format_exception(*err))
        summary = f"{err[0].__module__}.{err[0].__qualname__}: {err[1]}".removeprefix(
            "builtins.")
        if not isinstance(test, unittest.TestCase):
            # setUpModule/setUpClass/a cleanup: no startTest came; report it on its own
            self.events.write(event="outcome", test=str(test), status="fail", detail=text,
                              summary=summary, seconds=0.0, altered=False)
            return
        self._status = "fail"
        self._detail += text
        self._summary = self._summary or summary

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._failed(test, err)

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._failed(test, err)

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase,
                   err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._failed(test, err)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if isinstance(test, unittest.TestCase):
            self._status, self._detail = "skip", reason
        else:  # setUpClass or setUpModule skipped the lot
            self.events.write(event="outcome", test=str(test), status="skip", detail=reason,
                              seconds=0.0, altered=False)

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._status, self._detail = "fail", "unexpected success"


def _patch_subprocess_scripts(engine: str) -> None:
    """Tests that run ``python -c SCRIPT`` get the swap as the script's first lines."""
    from test.support import script_helper

    original = script_helper.run_python_until_end

    def run_python_until_end(*args: Any, **env_vars: Any) -> Any:
        args_ = list(args)
        if "-c" in args_[:-1]:
            at = args_.index("-c") + 1
            args_[at] = swap.prelude(engine) + args_[at]
        return original(*args_, **env_vars)

    script_helper.run_python_until_end = run_python_until_end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True, choices=swap.ENGINES)
    parser.add_argument("--events", required=True)
    parser.add_argument("--done", help="a file of tests already reported, one a line")
    parser.add_argument("--test-timeout", type=float, default=60.0)
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="only tests whose Class.method contains this")
    args = parser.parse_args(argv)
    faulthandler.enable()
    swap.install(args.engine)  # before the tests' modules read concurrent.futures
    _patch_subprocess_scripts(args.engine)
    done: set[str] = set()
    if args.done:
        with open(args.done, encoding="utf-8") as file:
            done = {line.rstrip("\n") for line in file}
    events = _Events(args.events)
    suite = unittest.defaultTestLoader.loadTestsFromName(swap.TESTS)
    mixins = engine_mixins(args.engine)
    chosen = unittest.TestSuite()
    for test in flatten(suite):
        name = short_id(test)
        if name in done or not belongs(test, args.engine, mixins):
            continue
        if args.patterns and not any(p in name for p in args.patterns):
            continue
        reason = reason_to_skip(name, args.engine)
        if reason is not None:
            events.write(event="outcome", test=name, status="listed", detail=reason,
                         seconds=0.0, altered=False)
            continue
        chosen.addTest(test)
    _Result.events = events
    _Result.test_timeout = args.test_timeout
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=_Result)
    # corework's launcher, forked now while this process has one thread, as a user's
    # script gets it (faulthandler's timer is a thread: later it would have to be spawned)
    from corework.engines import start_launcher

    start_launcher()
    faulthandler.dump_traceback_later(args.test_timeout, exit=True)  # to the first test
    runner.run(chosen)
    faulthandler.cancel_dump_traceback_later()
    events.write(event="end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
