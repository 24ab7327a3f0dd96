"""Shared fixtures: every test is bound to each engine where it makes sense, and no test
may leave a worker process or a thread behind."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from corework.engines import _launcher

ENGINES = ["process", "thread"]
GRACE_SECONDS = 10.0  # a deadlock tripwire, not a timing assumption


def _our_processes() -> set[int]:
    """Child processes of this test process, except the long-lived launcher itself."""
    launcher = _launcher._client.pid if _launcher._client is not None else None
    children = psutil.Process().children(recursive=True)
    return {child.pid for child in children if child.pid != launcher
            and child.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a child process or a thread running."""
    threads_before = set(threading.enumerate())
    processes_before = _our_processes()
    yield
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        extra_threads = [t for t in threading.enumerate()
                         if t not in threads_before and t.is_alive()]
        extra_processes = _our_processes() - processes_before
        if not extra_threads and not extra_processes:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: threads {extra_threads}, processes {extra_processes}")
        for thread in extra_threads:
            thread.join(0.05)
        time.sleep(0.01)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each behaviour test runs once per engine."""
    return str(request.param)
