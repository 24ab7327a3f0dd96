"""Task threads in worker processes (``Pool(engine="process", threads=N)``, and what
``engine="auto"`` uses for waiting work): tasks run at once, and a process that dies
costs only the task that brought it down — the others in it run again, alone first.

Tasks here meet at FIFOs: a task writes a byte to say it is running, and blocks on a
read until the test lets it go, so "running at the same time" is known, not hoped for."""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import pytest

import corework as cw
from tests.helpers import square

DEADLINE = 60.0  # a tripwire for a broken test, never a timing assumption


class Meeting:
    """Two FIFOs: tasks announce themselves on ``arrive``; the test releases them on
    ``release``. A marker directory records which tasks already ran once."""

    def __init__(self, root: Path) -> None:
        self.arrive = str(root / "arrive")
        self.release = str(root / "release")
        self.ran = root / "ran"
        os.mkfifo(self.arrive)
        os.mkfifo(self.release)
        self.ran.mkdir()
        # Held open so that tasks' opens never block and a reader never sees EOF early.
        self._arrivals = os.open(self.arrive, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(self.arrive, os.O_WRONLY)
        self._releases = os.open(self.release, os.O_RDWR)

    def wait_for(self, count: int) -> None:
        got = 0
        deadline = time.monotonic() + DEADLINE
        while got < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {got} of {count} tasks arrived"
            if select.select([self._arrivals], [], [], left)[0]:
                got += len(os.read(self._arrivals, count - got))

    def let_go(self, count: int) -> None:
        os.write(self._releases, b"x" * count)

    def close(self) -> None:
        for fd in (self._arrivals, self._keep, self._releases):
            os.close(fd)


@pytest.fixture
def meeting(tmp_path):
    meeting = Meeting(tmp_path)
    yield meeting
    meeting.close()


def meet(name: str, arrive: str, release: str, ran: str) -> tuple[int, int]:
    """Say I run, wait to be let go; a second run (after a crash) returns at once."""
    marker = Path(ran) / name
    if marker.exists():
        return os.getpid(), threading.get_ident()
    marker.write_text("ran")
    with open(arrive, "wb", buffering=0) as out:
        out.write(b"x")
    with open(release, "rb", buffering=0) as gate:
        gate.read(1)
    return os.getpid(), threading.get_ident()


def crash_after(others: int, arrive: str, ran: str) -> None:
    """Wait until ``others`` tasks have arrived (so they run beside it), then crash."""
    marker = Path(ran) / "crasher"
    if not marker.exists():
        marker.write_text("ran")
        fd = os.open(arrive, os.O_RDONLY)
        try:
            got = 0
            while got < others:
                got += len(os.read(fd, others - got))
        finally:
            os.close(fd)
    os._exit(7)


def hang(_=None):
    while True:
        time.sleep(0.01)


def on_main_thread(_=None) -> bool:
    return threading.current_thread() is threading.main_thread()


def test_tasks_run_at_once_on_every_thread_of_every_process(meeting):
    with cw.Pool(2, engine="process", threads=3) as pool:
        assert (pool.workers, pool.threads) == (2, 3)
        futures = [pool.submit(meet, str(i), meeting.arrive, meeting.release, str(meeting.ran))
                   for i in range(6)]
        meeting.wait_for(6)  # all six are running now: two processes, three threads each
        meeting.let_go(6)
        places = [future.result(timeout=DEADLINE) for future in futures]
    assert len(set(places)) == 6 and len({pid for pid, _ in places}) == 2
    assert os.getpid() not in {pid for pid, _ in places}


def test_one_task_per_worker_runs_on_its_main_thread():
    with cw.Pool(1, engine="process") as pool:
        assert pool.submit(on_main_thread).result() is True  # signal handlers work there


def test_a_crash_costs_the_task_that_crashed_and_no_other(meeting):
    ran = str(meeting.ran)
    with cw.Pool(1, engine="process", threads=4) as pool:
        others = [pool.submit(meet, str(i), meeting.arrive, meeting.release, ran)
                  for i in range(3)]
        crasher = pool.submit(crash_after, 3, meeting.arrive, ran)
        with pytest.raises(cw.WorkerCrashed, match="exit code 7") as info:
            crasher.result(timeout=DEADLINE)
        assert not info.value.shared  # blamed once it crashed alone
        places = [future.result(timeout=DEADLINE) for future in others]  # run again
        assert all(pid != os.getpid() for pid, _ in places)
        assert pool.submit(square, 5).result(timeout=DEADLINE) == 25


def test_a_timeout_stops_its_process_and_the_bystanders_run_again(meeting):
    ran = str(meeting.ran)
    with cw.Pool(1, engine="process", threads=2) as pool:
        bystander = pool.submit(meet, "bystander", meeting.arrive, meeting.release, ran)
        meeting.wait_for(1)
        hung = pool.options(timeout=1.0).submit(hang)
        with pytest.raises(cw.TaskTimeout):
            hung.result(timeout=DEADLINE)
        assert bystander.result(timeout=DEADLINE)[0] != os.getpid()  # not charged: ran again


def test_future_kill_stops_one_task_and_spares_the_others(meeting):
    ran = str(meeting.ran)
    with cw.Pool(1, engine="process", threads=2) as pool:
        bystander = pool.submit(meet, "bystander", meeting.arrive, meeting.release, ran)
        meeting.wait_for(1)
        doomed = pool.submit(meet, "doomed", meeting.arrive, meeting.release, ran)
        meeting.wait_for(1)
        assert doomed.kill()
        with pytest.raises(cw.Cancelled):
            doomed.result(timeout=DEADLINE)
        assert bystander.result(timeout=DEADLINE)[0] != os.getpid()


def test_errors_return_reports_the_crash_in_place_with_threads():
    with cw.Pool(2, engine="process", threads=4) as pool:
        results = pool.starmap(crash_at, [(x,) for x in range(40)], errors="return")
    assert isinstance(results[13], cw.WorkerCrashed)
    assert [r for i, r in enumerate(results) if i != 13] == [x for x in range(40) if x != 13]


def crash_at(x: int) -> int:
    if x == 13:
        os._exit(3)
    return x


@pytest.mark.parametrize("options, message", [
    ({"threads": 0}, "threads must be a positive int"),
    ({"threads": 2, "engine": "thread"}, "threads applies to engine='process'"),
    ({"threads": 2, "max_tasks_per_worker": 5}, "max_tasks_per_worker needs one task thread"),
])
def test_bad_thread_options_are_refused_up_front(options, message):
    with pytest.raises(ValueError, match=message):
        cw.Pool(1, **{"engine": "process", **options})
