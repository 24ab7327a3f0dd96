"""engine="dask": what only a Dask cluster does — a scheduler and workers started as the
README says, a worker killed mid-map, a LocalCluster of the pool's own, and the options
Dask cannot honour refused with a clear error. (The behaviour tests bound to every engine
run on dask too, against the session's cluster: see conftest.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import corework as cw
from tests.helpers import square

distributed = pytest.importorskip("distributed")

DASK = str(Path(sys.executable).parent / "dask")
ROOT = Path(__file__).resolve().parent.parent


def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def total(array: np.ndarray) -> float:
    return float(array.sum())


@pytest.fixture
def scheduler_and_workers(tmp_path) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` as separate
    processes on loopback, as the README starts them; stopped and reaped afterwards."""
    info = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(info)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
        start_new_session=True)
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        address = json.loads(info.read_text())["address"]
        workers = subprocess.Popen(
            [DASK, "worker", address, "--nworkers", "2", "--nthreads", "1",
             "--host", "127.0.0.1", "--no-dashboard"],
            cwd=ROOT, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
        with distributed.Client(address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:  # a graceful close takes seconds; the groups are killed whole instead
        for process in (workers, scheduler):
            if process is not None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_scheduler_and_workers_started_apart(scheduler_and_workers):
    address = scheduler_and_workers
    assert cw.map(square, range(1000), engine="dask", address=address) == [
        x * x for x in range(1000)]
    with cw.Pool(engine="dask", address=address) as pool:
        assert pool.workers == 2  # the cluster's threads
        assert pool.submit(square, 12).result() == 144


def test_a_worker_killed_mid_map_costs_nothing(scheduler_and_workers):
    """Dask re-runs the lost worker's task elsewhere; the map completes, in order."""
    address = scheduler_and_workers
    with distributed.Client(address, set_as_default=False) as client:
        pids = list(client.run(os.getpid).values())
    results = []
    with cw.Pool(2, engine="dask", address=address) as pool:
        for value in pool.imap(slow_square, range(60), chunksize=1):
            results.append(value)
            if len(results) == 10:
                os.kill(pids[0], signal.SIGKILL)  # a worker process, mid-task
    assert results == [x * x for x in range(60)]


def test_without_an_address_a_local_cluster_is_started_and_torn_down():
    """No scheduler configured: the pool's own LocalCluster; the no-leftovers fixture
    checks that its processes and threads are gone afterwards."""
    assert cw.map(square, range(100), engine="dask", workers=2) == [x * x for x in range(100)]


@pytest.fixture
def session_cluster(dask_address) -> Iterator[str]:
    """Pools given no address use the session's cluster (see conftest.py)."""
    import dask

    with dask.config.set({"scheduler-address": dask_address}):
        yield dask_address


def test_a_share_is_scattered_once_not_put_in_the_graph(session_cluster):
    shared = cw.share(np.arange(2**18, dtype="float64"))  # 2 MiB
    with cw.Pool(2, engine="dask") as pool:
        dask_engine = pool._scheduler.engine
        packed = dask_engine.pack([shared], str)
        assert len(packed.data) < 1024 and len(packed.refs) == 1
        assert list(pool.map(total, [shared] * 8)) == [float(shared.sum())] * 8
        assert len(dask_engine._shares) == 1  # one scatter for all eight tasks
        big = np.ones(2**18)  # not shared, but large: scattered for its chunk
        assert len(dask_engine.pack([big], str).data) < 1024
        assert pool.submit(total, big).result() == 2**18


def test_a_writable_share_is_refused_with_a_clear_error(session_cluster):
    out = cw.share(np.zeros(8), writable=True)
    with cw.Pool(1, engine="dask") as pool:
        with pytest.raises(cw.SerializationError, match=r"writable cw\.share"):
            pool.submit(total, out)


@pytest.mark.parametrize(("option", "message"), [
    ({"memory_limit": "1GiB"}, "memory_limit is not supported with engine='dask'"),
    ({"max_tasks_per_worker": 5}, "max_tasks_per_worker is not supported"),
    ({"start_method": "spawn"}, "start_method applies to engine='process'"),
])
def test_options_dask_cannot_honour_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        cw.Pool(1, engine="dask", **option)


def test_address_needs_the_dask_engine():
    with pytest.raises(ValueError, match="address applies to engine='dask'"):
        cw.Pool(1, engine="process", address="tcp://127.0.0.1:8786")


def test_cli_run_on_a_scheduler(scheduler_and_workers, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f"{x}\n" for x in range(20)))
    done = subprocess.run(
        [sys.executable, "-m", "corework", "run", "tests.helpers:square", "-i", str(source),
         "--engine", "dask", "--address", scheduler_and_workers, "--ordered", "-q"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["result"] for line in done.stdout.splitlines()] == [
        x * x for x in range(20)]


