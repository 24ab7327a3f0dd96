"""Shared fixtures: every test is bound to each engine where it makes sense, and no test
may leave a worker process or a thread behind."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corework.engines import _launcher

HAVE_DASK = importlib.util.find_spec("distributed") is not None
#: Behaviour tests run once per engine; on dask only with COREWORK_TEST_DASK=1: twice in
#: full CI runs on this 2-core VM a dask-bound behaviour test (a timeout, an initializer)
#: left its pool waiting for ever in shutdown under load. tests/test_dask.py still runs
#: wherever distributed is installed (COREWORK_TEST_DASK=0 turns that off too).
ENGINES = ["process", "thread"]
if sys.version_info >= (3, 12):
    ENGINES.append("interpreter")
if HAVE_DASK and os.environ.get("COREWORK_TEST_DASK", "") == "1":
    ENGINES.append("dask")
GRACE_SECONDS = 10.0  # a deadlock tripwire, not a timing assumption
ROOT = Path(__file__).resolve().parent.parent
#: Threads Dask's client starts once per process and keeps (module-level executors).
DASK_KEPT_THREADS = ("Dask-Callback-Thread", "Dask-Offload")

#: The session's Dask cluster, once started: a process whose whole tree is exempt from
#: the no-leftovers check (its nannies restart workers when tests stop tasks).
_cluster: subprocess.Popen[str] | None = None


def _our_processes() -> set[int]:
    """Child processes of this test process, except the long-lived launcher itself and
    the session's Dask cluster."""
    spared = set()
    if _launcher._client is not None:
        spared.add(_launcher._client.pid)
    if _cluster is not None:
        spared.add(_cluster.pid)
        try:
            spared |= {p.pid for p in psutil.Process(_cluster.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    children = psutil.Process().children(recursive=True)
    found = set()
    for child in children:
        try:
            if child.pid not in spared and child.status() != psutil.STATUS_ZOMBIE \
                    and not _is_resource_tracker(child):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def _is_resource_tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker: one per process, started by the first spawned
    child (Dask's LocalCluster spawns its workers) and kept until exit, like the launcher."""
    return "multiprocessing.resource_tracker" in " ".join(process.cmdline())


def _kept(thread: threading.Thread) -> bool:
    return thread.name.startswith(DASK_KEPT_THREADS)


def _shm_segments() -> set[str]:
    """Named shared-memory segments on this machine (corework makes none: memfds).

    POSIX semaphores (``sem.*``) are left out: Dask's worker processes, SIGKILLed by
    the dask tests, leave multiprocessing's behind (a known leak of those tests)."""
    try:
        return {name for name in os.listdir("/dev/shm") if not name.startswith("sem.")}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a child process, a thread or a /dev/shm segment behind."""
    threads_before = set(threading.enumerate())
    processes_before = _our_processes()
    segments_before = _shm_segments()
    yield
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        extra_threads = [t for t in threading.enumerate()
                         if t not in threads_before and t.is_alive() and not _kept(t)]
        extra_processes = _our_processes() - processes_before
        extra_segments = _shm_segments() - segments_before
        if not extra_threads and not extra_processes and not extra_segments:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: threads {extra_threads}, processes {extra_processes}, "
                        f"/dev/shm segments {sorted(extra_segments)}")
        for thread in extra_threads:
            thread.join(0.05)
        time.sleep(0.01)


_CLUSTER_SCRIPT = """
import sys
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       host="127.0.0.1", dashboard_address=None)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # until the test session closes our standard input
cluster.close()
"""


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A real LocalCluster (2 single-threaded worker processes on 127.0.0.1) for the whole
    session, in a process of its own: dask-engine pools connect to it instead of
    starting a cluster per test."""
    global _cluster
    pytest.importorskip("distributed")
    _cluster = subprocess.Popen(
        [sys.executable, "-c", _CLUSTER_SCRIPT], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert _cluster.stdout is not None
    address = _cluster.stdout.readline().strip()
    assert address.startswith("tcp://"), "the session's Dask cluster did not start"
    yield address
    assert _cluster.stdin is not None
    _cluster.stdin.close()
    try:
        _cluster.wait(60)
    except subprocess.TimeoutExpired:
        _cluster.kill()
        _cluster.wait()
    _cluster.stdout.close()
    _cluster = None


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each behaviour test runs once per engine. For dask, pools given no ``address``
    reach the session's cluster through Dask's own ``scheduler-address`` setting."""
    name = str(request.param)
    if name != "dask":
        yield name
        return
    import dask

    with dask.config.set({"scheduler-address": request.getfixturevalue("dask_address")}):
        yield name

