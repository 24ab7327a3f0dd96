"""engine="dask": what only a Dask cluster does — a scheduler and workers started as the
README says, a worker (or its nanny) killed mid-map, a hung task on a cluster whose
workers die, a LocalCluster of the pool's own, and the options Dask cannot honour refused
with a clear error. (The behaviour tests bound to every engine run on dask too, against
the session's cluster: see conftest.py.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import corework as cw
from tests.dask_cluster import DaskProcesses
from tests.helpers import add, recall, remember, square

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
#: Bound on every wait for the cluster: a hang fails the test instead of blocking CI.
WAIT_SECONDS = 60.0


def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def total(array: np.ndarray) -> float:
    return float(array.sum())


def hang_in_python() -> None:
    while True:
        pass


def hang_in_sleep() -> None:
    while True:
        time.sleep(60)


def die_once_then_square(x: int, marker: str) -> int:
    """The first run (no ``marker`` yet) writes its worker's pid there and SIGKILLs that
    worker process, mid-task; the run Dask starts elsewhere afterwards returns."""
    if not os.path.exists(marker):
        with open(f"{marker}.tmp", "w") as out:
            out.write(str(os.getpid()))
        os.rename(f"{marker}.tmp", marker)
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def chaos_task(x: int, hang_at: int, how: str, victim_at: int, marker: str) -> int:
    if x == victim_at:
        return die_once_then_square(x, marker)
    if x == hang_at:
        (hang_in_sleep if how == "sleep" else hang_in_python)()
    return x * x


def chaos_item(args: tuple[int, int, str, int, str]) -> int:
    return chaos_task(*args)


def announce_then_wait(x: int, fifo: str, marker: str) -> int:
    """The first run tells the test its worker's pid through ``fifo`` and waits there to
    be killed; a re-run (``marker`` exists: the test wrote it before killing) returns."""
    if not os.path.exists(marker):
        with open(fifo, "w") as announce:
            announce.write(str(os.getpid()))
        hang_in_sleep()
    return x * x


@pytest.fixture
def scheduler_and_workers(dask_cluster: DaskProcesses) -> str:
    """``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` as separate
    processes on loopback, as the README starts them: the session's cluster (see
    conftest.py), whole again; tests that end or kill its workers leave it to the
    nannies to replace them."""
    return dask_cluster.address


def worker_pids(client) -> dict[str, int]:
    """The process of each worker that answers (one being ended may not)."""
    return dict(client.run(os.getpid, on_error="ignore"))


def running_tasks(dask_worker) -> list[str]:
    """Run on a worker: the tasks its threads run now (stopped ones included)."""
    return [str(key) for key in dask_worker.active_keys]


def wait_for_cluster(client, count: int, without: set[int]) -> None:
    """Until the scheduler has ``count`` workers, none of them a process in ``without``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        pids = set(worker_pids(client).values())
        if len(pids) == count and not pids & without:
            return
        assert time.monotonic() < deadline, f"the cluster did not get {count} workers back"
        time.sleep(0.05)


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


def _refused(address: str, security: object = None) -> bool:
    """Whether a comm with these credentials (none: plain TCP) cannot ask the scheduler
    at ``address`` who it is (on a loop of its own: a failed synchronous client leaves
    its event loop's thread behind)."""
    async def ask() -> None:
        arguments = security.get_connection_args("client") if security else {}
        comm = await distributed.comm.connect(address, timeout=5, **arguments)
        try:
            await comm.write({"op": "identity", "reply": True})
            await comm.read()
        finally:
            await comm.close()

    try:
        asyncio.run(ask())
    except (OSError, TimeoutError, TypeError):  # TypeError: TLS without a context
        return True
    return False


def test_a_local_cluster_of_the_pools_own_admits_no_one_else():
    """The pool's own cluster speaks TLS with credentials only this process holds: a
    client without them, or with other throw-away ones, is refused (another user of the
    machine could otherwise run code as this user, in this process)."""
    from distributed.security import Security

    with cw.Pool(2, engine="dask") as pool:
        address = pool._scheduler.engine._cluster.own.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        assert _refused(address)
        assert _refused(address.replace("tls://", "tcp://"))
        assert _refused(address, security=Security.temporary())
        assert not _refused(address, security=pool._scheduler.engine._cluster.client.security)
        assert pool.submit(square, 7).result(timeout=WAIT_SECONDS) == 49


def test_an_unreachable_scheduler_is_one_clear_error_within_seconds():
    with pytest.raises(ConnectionError, match=r"cannot reach the Dask scheduler at "
                                              r"tcp://127\.0\.0\.1:1 within 10 s"):
        cw.Pool(1, engine="dask", address="tcp://127.0.0.1:1")


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
        assert len(dask_engine._scatter._shares) == 1  # one scatter for all eight tasks
        big = np.ones(2**18)  # not shared, but large: scattered for its chunk
        assert len(dask_engine.pack([big], str).data) < 1024
        assert pool.submit(total, big).result() == 2**18


def test_a_writable_share_is_refused_with_a_clear_error(session_cluster):
    out = cw.share(np.zeros(8), writable=True)
    with cw.Pool(1, engine="dask") as pool:
        with pytest.raises(cw.SerializationError, match=r"writable cw\.share"):
            pool.submit(total, out)


def test_a_result_slow_to_fetch_holds_up_only_its_own_task(session_cluster):
    """Fetching a result can take long: from a worker that died after finishing the task,
    the Dask scheduler tries to connect for 30 s. Meanwhile the other lanes' results
    are reported (white-box: the client's gather of the first result waits for the test)."""
    with cw.Pool(2, engine="dask") as pool:
        client = pool._scheduler.engine._cluster.client
        real_gather, held, release = client._gather, [], asyncio.Event()

        async def gather(futures, *args, **kwargs):
            fetched = futures if isinstance(futures, list) else [futures]
            if any("-add-" in future.key for future in fetched):  # the slow one's
                held.append(futures)
                await release.wait()
            return await real_gather(futures, *args, **kwargs)

        client._gather = gather
        try:
            slow = pool.submit(add, 2, 3)
            others = [pool.submit(square, x) for x in range(3, 10)]
            assert [f.result(WAIT_SECONDS) for f in others] == [x * x for x in range(3, 10)]
            assert held and not slow.done()
        finally:
            client.loop.add_callback(release.set)
        assert slow.result(WAIT_SECONDS) == 5


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




# ------------------------------------------------------------------ chaos


def test_a_hung_task_and_a_killed_worker_cost_only_the_hung_task(scheduler_and_workers,
                                                                  tmp_path):
    """Three rounds on one cluster: a map of 400 tasks in which one hangs for ever (in
    Python, then in time.sleep, then in Python) and one SIGKILLs its worker process. Every
    other result arrives exactly once, the hung task times out, shutdown is prompt, and
    no worker is left running a task."""
    address = scheduler_and_workers
    with distributed.Client(address, set_as_default=False) as client:
        for round_, how in enumerate(["python", "sleep", "python"]):
            _chaos_round(client, address, tmp_path / f"victim-{round_}", how)


def _chaos_round(client, address: str, marker: Path, how: str) -> None:
    hang_at, victim_at = 300, 100

    def calls() -> Iterator[tuple[int, int, str, int, str]]:
        for x in range(400):
            if x == hang_at:
                # The hung task starts once the killed worker is replaced: while a
                # cluster of two is one short, both lanes' tasks share the one worker
                # left, and a task queued behind a hung one there would time out too
                # (a timeout counts from when a task is handed to Dask).
                deadline = time.monotonic() + WAIT_SECONDS
                while not marker.exists():
                    assert time.monotonic() < deadline, "the victim task never ran"
                    time.sleep(0.01)
                wait_for_cluster(client, 2, {int(marker.read_text())})
            yield x, hang_at, how, victim_at, str(marker)

    pool = cw.Pool(engine="dask", address=address, timeout=1.0)
    try:
        assert pool.workers == 2
        # Chunks of 4: the hung task's chunk-mates are re-run alone after its timeout,
        # and the victim's chunk is queued long before the input reaches the hang.
        outcomes = list(pool.imap(chaos_item, calls(), ordered=False, chunksize=4,
                                  errors="outcome"))
    finally:
        closer = threading.Thread(target=pool.shutdown)
        closer.start()
        closer.join(10)  # a deadlock tripwire: shutdown must not wait on a lost lane
        assert not closer.is_alive(), "shutdown() did not return within 10 s"
    assert Counter(o.index for o in outcomes) == Counter(range(400))  # each exactly once
    by_index = {o.index: o for o in outcomes}
    assert isinstance(by_index[hang_at].error, cw.TaskTimeout)
    assert [by_index[x].error for x in range(400) if x != hang_at] == [None] * 399
    assert [by_index[x].value for x in range(400) if x != hang_at] == [
        x * x for x in range(400) if x != hang_at]
    wait_for_cluster(client, 2, {int(marker.read_text())})
    assert not any(client.run(running_tasks, on_error="ignore").values())  # hung: nowhere


@pytest.mark.parametrize("what", ["worker", "nanny"])
def test_a_dead_worker_or_nanny_leaves_no_future_pending(tmp_path, what):
    """Two ``dask worker`` processes (a nanny each, with one worker): the worker process
    running a task is SIGKILLed, or its nanny is (the worker then exits too, and is not
    replaced). Dask runs the task elsewhere; no future is left pending."""
    fifo, marker = tmp_path / "started", tmp_path / "killed"
    os.mkfifo(fifo)
    cluster = DaskProcesses(tmp_path, nworkers=(1, 1))
    try:
        address = cluster.start()
        with cw.Pool(engine="dask", address=address) as pool:
            futures = [pool.submit(square, x) for x in range(10)]
            victim = pool.submit(announce_then_wait, 10, str(fifo), str(marker))
            futures += [pool.submit(square, x) for x in range(11, 20)]
            pid = _read_bounded(fifo)
            marker.write_text("killed")  # before the kill: the re-run must return
            os.kill(pid if what == "worker" else _parent(pid), signal.SIGKILL)
            _, pending = concurrent.futures.wait([*futures, victim], WAIT_SECONDS)
            assert not pending
            assert victim.result() == 100
            assert [f.result() for f in futures] == [x * x for x in range(20) if x != 10]
            assert pool.submit(square, 7).result(WAIT_SECONDS) == 49  # the pool goes on
    finally:
        cluster.stop()


def _read_bounded(fifo: Path) -> int:
    """What a task wrote into ``fifo``; a task that never writes fails the test."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    reader.join(WAIT_SECONDS)
    if reader.is_alive():  # unblock the reader, then fail
        with open(fifo, "w"):
            pass
        reader.join()
        pytest.fail("the task never started")
    return int(got[0])


def _parent(pid: int) -> int:
    import psutil

    return psutil.Process(pid).ppid()


def test_an_own_local_cluster_keeps_its_workers():
    """A LocalCluster closes for good a nanny whose worker is still away when the lost-
    worker timeout after a loss is up (here at once): the engine starts it again, so a
    pool whose only worker was ended to stop a hung task still runs the next one — and
    initialises the new worker: the setup travels with the tasks, not in the dead
    worker's memory. (Only the hung task has a timeout: the next one is the first of a
    worker just spawned, which imports what it needs, and how long that takes is no
    part of the promise.)"""
    import dask

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
        with cw.Pool(1, engine="dask", initializer=remember, initargs=("set up",)) as pool:
            with pytest.raises(cw.TaskTimeout):
                pool.options(timeout=1.0).submit(hang_in_python).result(WAIT_SECONDS)
            assert pool.submit(square, 4).result(WAIT_SECONDS) == 16
            assert pool.submit(recall).result(WAIT_SECONDS) == "set up"


def test_a_corework_pool_serves_as_dasks_local_process_pool():
    """dask's multiprocessing scheduler takes any ProcessPoolExecutor-like pool (it reads
    ``_max_workers``)."""
    import dask
    import dask.bag

    with cw.Pool(2, engine="process") as pool, \
            dask.config.set(pool=pool, scheduler="processes"):
        total = dask.bag.from_sequence(range(10), npartitions=4).map(square).sum().compute()
    assert total == sum(x * x for x in range(10))
