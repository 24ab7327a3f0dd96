"""Chaos: while a map of 5,000 tasks runs, a thread SIGKILLs corework's own processes —
workers and the launcher — at random. Every result must arrive exactly once, in order
(or, unordered, each once), on the process engine and on auto.

The killer sleeps between kills to spread them over the map: that is load, not a way of
ordering anything. A kill lands only while some worker is up (else there would be nothing
to make progress with, and no system could)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time

import psutil
import pytest

import corework as cw
from corework.engines.process import launchers as _launcher

TASKS = 5_000
RETRIES = 3


def slow_square(x: int) -> int:
    time.sleep(0.0005)
    return x * x


class Killer:
    """SIGKILLs a random corework process every 50–200 ms until stopped."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.stopped = threading.Event()
        self.kills: dict[str, int] = {"worker": 0, "launcher": 0}
        self.thread = threading.Thread(target=self._run, name="chaos-killer")

    def __enter__(self) -> Killer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopped.wait(self.random.uniform(0.05, 0.2)):
            client = _launcher._client
            if client is None:
                continue
            try:
                workers = [p.pid for p in psutil.Process(client.pid).children()]
            except psutil.NoSuchProcess:
                continue
            if not workers:
                continue  # the pool is between launchers: nothing runs to be killed
            victim = self.random.choice([client.pid, *workers])
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills["launcher" if victim == client.pid else "worker"] += 1


@pytest.mark.parametrize("engine", ["process", "auto"])
@pytest.mark.parametrize("errors, ordered", [("raise", True), ("return", False)])
def test_every_result_arrives_exactly_once_while_processes_are_killed(engine, errors,
                                                                      ordered):
    expected = [x * x for x in range(TASKS)]
    with Killer(seed=hash((engine, errors)) & 0xFFFF) as killer:
        results = cw.map(slow_square, range(TASKS), engine=engine, workers=2,
                         retries=RETRIES, errors=errors, ordered=ordered)
    assert sum(killer.kills.values()) > 0, "the map ended before anything was killed"
    failed = [(r, r.__notes__) for r in results if isinstance(r, BaseException)]
    assert not failed, (failed, killer.kills)
    if ordered:
        assert results == expected
    else:
        assert sorted(results) == expected  # each once: nothing lost, nothing twice


def test_a_pool_outlives_its_launcher_being_killed_again_and_again():
    with cw.Pool(2, engine="process", retries=RETRIES) as pool:
        for _ in range(5):
            assert pool.submit(slow_square, 3).result(timeout=60) == 9
            with contextlib.suppress(ProcessLookupError):  # gone already: as good
                os.kill(_launcher._client.pid, signal.SIGKILL)
        results = list(pool.imap(slow_square, range(200)))
    assert results == [x * x for x in range(200)]
