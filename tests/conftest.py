"""Shared fixtures: every test is bound to each engine where it makes sense, and no test
may leave a worker process or a thread behind."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corework.engines.process import launchers as _launcher
from tests.dask_cluster import DaskProcesses

HAVE_DASK = importlib.util.find_spec("distributed") is not None
#: Behaviour tests run once per engine: on dask too wherever distributed is installed,
#: against one session cluster (COREWORK_TEST_DASK=0 turns dask off, tests/test_dask.py
#: included).
ENGINES = ["process", "thread"]
# Sub-interpreters from 3.13: 3.12's cannot load ctypes, so a hung or timed-out task there
# spins on, abandoned, and 3.12 aborts at exit while one runs (tests/test_interpreter_engine.py
# covers 3.12's engine on its own).
if sys.version_info >= (3, 13):
    ENGINES.append("interpreter")
if HAVE_DASK and os.environ.get("COREWORK_TEST_DASK", "") != "0":
    ENGINES.append("dask")
elif HAVE_DASK:
    collect_ignore = ["test_dask.py"]
GRACE_SECONDS = 10.0  # a deadlock tripwire, not a timing assumption
ROOT = Path(__file__).resolve().parent.parent
#: Threads Dask's client starts once per process and keeps (module-level executors).
DASK_KEPT_THREADS = ("Dask-Callback-Thread", "Dask-Offload")

#: The session's Dask cluster, once started: its processes, and the threads of its
#: client here, are exempt from the no-leftovers check (its nannies restart workers when
#: tests stop tasks).
_cluster: DaskProcesses | None = None
_cluster_threads: set[threading.Thread] = set()


def _our_processes() -> set[int]:
    """Child processes of this test process, except the long-lived launcher itself and
    the session's Dask cluster."""
    spared = set(_launcher.launcher_pids())
    sessions = _cluster.sessions() if _cluster is not None else set()
    children = psutil.Process().children(recursive=True)
    found = set()
    for child in children:
        try:
            if child.pid not in spared and os.getsid(child.pid) not in sessions \
                    and child.status() != psutil.STATUS_ZOMBIE \
                    and not _is_resource_tracker(child):
                found.add(child.pid)
        except (OSError, psutil.NoSuchProcess):
            pass
    return found


def _is_resource_tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker: one per process, started by the first spawned
    child (Dask's LocalCluster spawns its workers) and kept until exit, like the launcher."""
    return "multiprocessing.resource_tracker" in " ".join(process.cmdline())


def _kept(thread: threading.Thread) -> bool:
    return thread.name.startswith(DASK_KEPT_THREADS) or thread in _cluster_threads


def _shm_segments() -> set[str]:
    """Named shared-memory segments on this machine (corework makes none: memfds)."""
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _left_behind(segments: set[str]) -> set[str]:
    """Those of ``segments`` (new in /dev/shm since the test began) that this test left
    behind: named as this test's processes name theirs (corework's prefix, or the pid of
    this process or one of its children, as joblib's and loky's names hold), and mapped
    by no live process. Other programs' files on a shared machine are none of its
    business."""
    tree = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    ours = {name for name in segments if _named_by(name, tree)}
    return _unmapped(ours) if ours else set()


def _named_by(name: str, pids: set[int]) -> bool:
    if name.startswith("corework"):
        return True
    return any(int(number) in pids for number in re.findall(r"\d+", name))


def _unmapped(names: set[str]) -> set[str]:
    """Those of ``names`` (in /dev/shm) that no live process has mapped, found by inode
    (a mapping shows the name the file was created under, not its final one)."""
    inodes: dict[int, str] = {}
    for name in names:
        try:
            inodes[os.stat(f"/dev/shm/{name}").st_ino] = name
        except OSError:
            pass  # removed meanwhile
    mapped = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    if "/dev/shm/" in line:
                        fields = line.split(maxsplit=5)
                        if int(fields[4]) in inodes:
                            mapped.add(inodes[int(fields[4])])
        except (OSError, ValueError, IndexError):
            pass  # ended meanwhile, or not ours to read
    return set(inodes.values()) - mapped


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
        extra_segments = _left_behind(_shm_segments() - segments_before)
        if not extra_threads and not extra_processes and not extra_segments:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: threads {extra_threads}, processes {extra_processes}, "
                        f"/dev/shm segments {sorted(extra_segments)}")
        for thread in extra_threads:
            thread.join(0.05)
        time.sleep(0.01)


@pytest.fixture(scope="session")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real cluster (``dask scheduler`` and a ``dask worker`` of 2 single-threaded
    workers with nannies, on 127.0.0.1) for the whole session: dask-engine pools connect
    to it instead of starting a cluster per test. (Not a LocalCluster: that closes for
    good a nanny whose worker is away 15 s after an earlier loss, which the tests'
    timeouts and kills, seconds apart, would hit; see engines/dask/.)"""
    global _cluster
    pytest.importorskip("distributed")
    cluster = DaskProcesses(tmp_path_factory.mktemp("dask"))
    _cluster = cluster
    before = set(threading.enumerate())
    try:
        address = cluster.start()
        cluster.client()
        _cluster_threads.update(set(threading.enumerate()) - before)
        yield address
    finally:
        cluster.stop()
        _cluster = None
        _cluster_threads.clear()


@pytest.fixture
def dask_cluster(dask_address: str) -> DaskProcesses:
    """The session's cluster, whole: a nanny may still be replacing a worker that the
    test before ended (and two lanes sharing the one worker left would see a task queued
    behind a hung one there time out too)."""
    assert _cluster is not None
    _cluster.wait_whole()
    return _cluster


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each behaviour test runs once per engine. For dask, pools given no ``address``
    reach the session's cluster through Dask's own ``scheduler-address`` setting."""
    name = str(request.param)
    if name != "dask":
        yield name
        return
    import dask

    cluster: DaskProcesses = request.getfixturevalue("dask_cluster")
    with dask.config.set({"scheduler-address": cluster.address}):
        yield name

