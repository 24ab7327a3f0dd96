"""A real Dask cluster for the tests: ``dask scheduler`` and ``dask worker`` processes on
loopback, started as the README says, each in a session of its own.

Stopping them leaves nothing behind. Each nanny spawns its worker process through
multiprocessing, whose named semaphores (``/dev/shm/sem.mp-*``) the nanny's resource
tracker removes once every process holding them is gone. So the ``dask`` processes are
SIGKILLed one by one (their worker processes exit at once when their nanny dies: Dask
watches the parent), never as a whole process group, which would kill the tracker too and
leave the semaphores behind; then the stop waits until no process of their sessions is
left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

DASK = str(Path(sys.executable).parent / "dask")
ROOT = Path(__file__).resolve().parent.parent
#: Bounds for starting and stopping: deadlock tripwires, not timing assumptions.
START_SECONDS = 60.0
STOP_SECONDS = 30.0
#: What the tests' task functions import, imported by each worker process as it starts
#: (as a deployment preloads its libraries), so that a worker a nanny has just started
#: does not spend a task's 1 s timeout importing them.
PRELOAD = ("--preload", "corework", "--preload", "pytest")


class DaskProcesses:
    """A scheduler and ``len(nworkers)`` ``dask worker`` processes (each with
    ``nworkers[i]`` single-threaded workers, with nannies unless ``nanny`` is False)."""

    def __init__(self, directory: Path, nworkers: tuple[int, ...] = (2,),
                 nanny: bool = True) -> None:
        self.nworkers = nworkers
        self.nanny = nanny
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.info = directory / "scheduler.json"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.address = ""
        self._client: Any = None

    def start(self) -> str:
        """Start every process; return once all workers joined the scheduler."""
        import distributed

        self.scheduler = self._popen(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--dashboard-address", "127.0.0.1:0",  # its HTTP server: not on 8787
            "--scheduler-file", str(self.info))
        deadline = time.monotonic() + START_SECONDS
        while not self._address_written():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                raise RuntimeError("the Dask scheduler did not start")
            time.sleep(0.02)
        for count in self.nworkers:
            self.workers.append(self._popen(
                "worker", self.address, "--nworkers", str(count), "--nthreads", "1",
                "--host", "127.0.0.1", "--no-dashboard", *PRELOAD,
                *([] if self.nanny else ["--no-nanny"])))
        with distributed.Client(self.address, set_as_default=False) as client:
            client.wait_for_workers(sum(self.nworkers), timeout=START_SECONDS)
        return self.address

    def client(self) -> Any:
        """A Dask client of this cluster's own (made on first use, closed by ``stop``)."""
        import distributed

        if self._client is None:
            self._client = distributed.Client(self.address, set_as_default=False)
        return self._client

    def wait_whole(self) -> None:
        """Until every worker is registered again (a nanny may be replacing one that a
        test ended or killed)."""
        self.client().wait_for_workers(sum(self.nworkers), timeout=START_SECONDS)

    def _popen(self, *args: str) -> subprocess.Popen[bytes]:
        """A ``dask`` command; its log goes to ``<directory>/dask-<n>.log``."""
        log = self.info.parent / f"dask-{len(self.workers) + (self.scheduler is not None)}.log"
        with open(log, "wb") as out:
            return subprocess.Popen([DASK, *args], cwd=ROOT, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=out, start_new_session=True)

    def _address_written(self) -> bool:
        try:
            self.address = json.loads(self.info.read_text())["address"]
        except (OSError, ValueError, KeyError):  # not there, or half written
            return False
        return True

    def sessions(self) -> set[int]:
        """The session ids of this cluster's processes (each ``dask`` command leads one)."""
        return {process.pid for process in [self.scheduler, *self.workers]
                if process is not None}

    def pids(self) -> set[int]:
        """Every live process of this cluster (also those reparented after a kill)."""
        sessions = self.sessions()
        found = set()
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) in sessions \
                        and process.status() != psutil.STATUS_ZOMBIE:
                    found.add(process.pid)
            except (OSError, psutil.NoSuchProcess):
                pass
        return found

    def stop(self) -> None:
        """SIGKILL the ``dask`` processes (workers first), then wait until every process
        of theirs is gone (see the module docstring); raise if some outlive the wait."""
        if self._client is not None:
            self._client.close()
            self._client = None
        for process in [*self.workers, self.scheduler]:
            if process is not None and process.poll() is None:
                process.kill()
        for process in [*self.workers, self.scheduler]:
            if process is not None:
                process.wait(STOP_SECONDS)
        deadline = time.monotonic() + STOP_SECONDS
        while left := self.pids():
            if time.monotonic() > deadline:
                for session in self.sessions():
                    try:
                        os.killpg(session, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                raise RuntimeError(f"Dask processes {sorted(left)} outlived their cluster")
            time.sleep(0.02)
