"""The poison table: data that fails at each stage of a task's trip, in each way, on every
engine where the case can happen. Each case: the task fails with an error that names
the stage, the five tasks beside it succeed, the pool goes on, nothing hangs (every
case has a per-task timeout) and nothing is left behind (see conftest's fixture)."""

from __future__ import annotations

import re
import sys

import pytest

import corework as cw
from tests import poison
from tests.poison import ACTIONS, EXIT_CODE, STAGES, poison_for, task

ENGINES = ["auto", "process", "thread"]
if sys.version_info >= (3, 13):  # see conftest.ENGINES: 3.12's cannot stop a hung task
    ENGINES.append("interpreter")
#: Stages that run in the caller: what kills or hangs there is the caller's own code.
IN_CALLER = ("pickle-argument", "unpickle-result")
KILLS = ("segfault", "exit")
TIMEOUT = 1.0


def applies(engine: str, stage: str, action: str) -> str | None:
    """Why the case cannot happen on ``engine`` (None: it can)."""
    if engine == "thread" and stage != "run":
        return "threads pickle nothing"
    if engine in ("thread", "interpreter") and action in KILLS:
        return "the task runs in this process: it would end the caller, as any code would"
    if stage in IN_CALLER and (action in KILLS or action == "hang"):
        return "that stage runs in the caller: the caller's own code"
    if engine == "interpreter" and action == "hang" and sys.version_info < (3, 13):
        return "3.12's sub-interpreters cannot interrupt a task"
    return None


def expected(stage: str, action: str) -> tuple[type[BaseException], str]:
    """The exception the poisoned task ends with, and what its message says."""
    if action == "segfault":
        return cw.WorkerCrashed, "signal SIGSEGV"
    if action == "exit":
        return cw.WorkerCrashed, f"exit code {EXIT_CODE}"
    if action == "hang":
        return cw.TaskTimeout, "longer than its timeout"
    raised = {"raise": "Poisoned", "systemexit": "SystemExit",
              "keyboardinterrupt": "KeyboardInterrupt"}[action]
    if stage == "run":
        own = {"raise": poison.Poisoned, "systemexit": SystemExit,
               "keyboardinterrupt": KeyboardInterrupt}[action]
        return own, ""
    words = {"pickle-argument": "cannot send the arguments",
             "unpickle-argument": "could not unpickle the task's arguments",
             "pickle-result": "could not be pickled in the",
             "unpickle-result": "could not be unpickled here, in the caller"}[stage]
    return cw.SerializationError, f"{words}.*{raised}" if stage != "pickle-argument" else words


CASES = [pytest.param(engine, stage, action, id=f"{engine}-{stage}-{action}")
         for engine in ENGINES for stage in STAGES for action in ACTIONS]


def check(error: BaseException, stage: str, action: str) -> None:
    kind, words = expected(stage, action)
    assert isinstance(error, kind), repr(error)
    text = " ".join([str(error), *getattr(error, "__notes__", [])])
    assert re.search(words, text, re.DOTALL), text


@pytest.mark.parametrize("engine, stage, action", CASES)
def test_a_poisoned_task_costs_itself_only(engine, stage, action):
    why = applies(engine, stage, action)
    if why is not None:
        pytest.skip(why)
    bad = poison_for(stage, action)
    if engine == "auto":
        run_on_auto(bad, stage, action)
        return
    with cw.Pool(2, engine=engine, timeout=TIMEOUT) as pool:
        before = [pool.submit(task, value) for value in (0, 1)]
        if stage == "pickle-argument" and action == "keyboardinterrupt":
            with pytest.raises(KeyboardInterrupt):
                pool.submit(task, bad)
            poisoned = None
        elif stage == "pickle-argument":
            with pytest.raises(cw.SerializationError) as info:
                pool.submit(task, bad)
            check(info.value, stage, action)
            poisoned = None
        else:
            poisoned = pool.submit(task, bad)
        after = [pool.submit(task, value) for value in (3, 4, 5)]
        if poisoned is not None:
            check(poisoned.exception(timeout=60), stage, action)
        assert [f.result(timeout=60) for f in before + after] == [0, 1, 3, 4, 5]
        assert pool.submit(task, 41).result(timeout=60) == 41  # the pool goes on


def run_on_auto(bad: object, stage: str, action: str) -> None:
    items = [0, 1, bad, 3, 4, 5]
    if stage == "pickle-argument" and action == "keyboardinterrupt":
        with pytest.raises(KeyboardInterrupt):
            cw.map(task, items, timeout=TIMEOUT, errors="return")
    else:
        results = cw.map(task, items, timeout=TIMEOUT, errors="return")
        check(results[2], stage, action)
        assert results[:2] + results[3:] == [0, 1, 3, 4, 5]
    assert cw.map(task, [41, 42]) == [41, 42]  # and the next map runs as usual
