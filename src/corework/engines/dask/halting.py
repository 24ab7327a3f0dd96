"""Stopping tasks on a Dask cluster: a stopped task runs nowhere, now or later.

Dask cannot interrupt a running function; its nanny replaces a worker process that ends.
:class:`Halts` tells every worker the task is stopped, ends the process running it and
waits until the cluster has forgotten the task and replaced the process (its docstring
says in which order, and why)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from .cluster import Cluster
from .worker import _end_worker, _stop_keys


class Host(Protocol):
    """What halting asks of its engine (``DaskEngine``)."""

    workers: int

    def stopping(self) -> bool: ...

    def ready_again(self, slot: int) -> None: ...

#: How long restarting a worker (to stop a task) may take before it is given up.
RESTART_SECONDS = 60.0
#: How often the scheduler is asked whether a worker ended by kill() has been replaced.
RESTART_POLL_SECONDS = 0.05

log = logging.getLogger("corework.dask")


class Halts:
    """The engine's background stops of tasks, one thread each.

    Dask re-runs the tasks of a worker that dies on another one, and a hung task
    re-run there would wedge that worker's thread for good, unseen: its event loop
    still answers, so Dask takes it for healthy and gives it more tasks, which never
    start. And ``Client.cancel`` only queues a message, so it may reach the
    scheduler after the worker's death. Hence, in this order:

    1. tell every worker that these tasks are stopped, and ask which runs one now
       (``_run`` and ``_stop_keys`` take one lock, so a worker either reports the
       task or never starts it: a re-run Dask hands it is skipped);
    2. end the worker processes that run one (their nannies start new ones at once),
       while the scheduler still counts them busy, so it gives them nothing new;
    3. cancel the tasks, and wait until the scheduler has forgotten them: from then
       on no worker is given them;
    4. ask the workers that joined since step 1 (a replacement, say: one may have
       been given a task before the cancel arrived), and end any that runs one.
       (Not the others: they were told, and asking a worker that is being ended
       would wait for Dask's connect timeout, 30 s.)

    Ending the process, rather than Dask's graceful ``restart_workers``, takes
    milliseconds instead of seconds: a worker whose thread is stuck in a task cannot
    close gracefully anyway. Every step is bounded by ``RESTART_SECONDS`` in all.
    """

    def __init__(self, engine: Host, cluster: Cluster) -> None:
        self._engine = engine
        self._cluster = cluster
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def join(self) -> None:
        """Wait (bounded) for the stops under way."""
        for thread in list(self._threads):
            thread.join(RESTART_SECONDS)

    def start(self, futures: list[Any], slot: int | None = None) -> None:
        """In the background: stop the tasks of ``futures``; then ``slot`` is ready."""
        halt = threading.Thread(target=self._stop_tasks, args=(futures, slot),
                                name="corework-dask-halt", daemon=True)
        with self._lock:
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            self._threads.append(halt)
        halt.start()

    def _stop_tasks(self, futures: list[Any], slot: int | None) -> None:
        """Make sure the tasks of ``futures`` run nowhere, now or later (in the order
        the class docstring gives); then ``slot`` is ready (once the worker processes
        ended for it are replaced)."""
        keys = sorted({future.key for future in futures})
        deadline = time.monotonic() + RESTART_SECONDS
        try:
            asked, ended, count = self._end_runners(keys, deadline)
            self._cluster.client.cancel(futures, force=True)
            self._await_forgotten(keys, deadline)
            joined = set(self._cluster.client.scheduler_info(n_workers=-1)["workers"]) - asked
            if joined:
                ended |= self._end_runners(keys, deadline, sorted(joined))[1]
            if ended:
                self._await_replacements(ended, count, deadline)
        except Exception as exc:
            log.warning("corework could not stop the Dask tasks %s (they may run on until "
                        "they end): %s", keys, exc)
        finally:
            if slot is not None:
                self._engine.ready_again(slot)

    def _end_runners(self, keys: list[str], deadline: float,
                     workers: list[str] | None = None) -> tuple[set[str], set[str], int]:
        """Tell ``workers`` (default: every worker) that ``keys`` are stopped; end those
        that run one. Returns the workers asked, those ended, and how many answered."""
        answers = self._cluster.client.run(_stop_keys, keys, workers=workers, on_error="return",
                                   callback_timeout=_left(deadline))
        told = {worker: answer for worker, answer in answers.items()
                if isinstance(answer, tuple)}
        doomed = {worker for worker, (runs, nanny) in told.items() if runs and nanny}
        orphans = sorted(worker for worker, (runs, nanny) in told.items() if runs and not nanny)
        deaf = sorted(set(answers) - set(told))
        if doomed:  # the connections reset as they end: errors are expected
            self._cluster.client.run(_end_worker, workers=sorted(doomed), wait=False,
                             on_error="ignore", callback_timeout=_left(deadline))
        if orphans:
            log.warning("corework cannot stop tasks %s on Dask workers without a nanny "
                        "(%s): they run on until they end", keys, orphans)
        if deaf:
            log.warning("corework could not tell the Dask workers %s to stop tasks %s "
                        "(they may run on there until they end)", deaf, keys)
        # As many as answered: one that did not may be on its way out.
        return set(answers), doomed, len(told)

    def _await_forgotten(self, keys: list[str], deadline: float) -> None:
        """Wait until the Dask scheduler knows none of ``keys`` (their cancel arrived)."""
        while True:
            try:
                known = self._cluster.client.run_on_scheduler(_known_keys, keys,
                                                      callback_timeout=_left(deadline))
            except Exception as exc:  # e.g. a scheduler that runs no functions
                log.debug("corework cannot ask the Dask scheduler about %s: %s", keys, exc)
                return  # the workers there now are told; a re-run elsewhere is possible
            if not known:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the Dask scheduler did not drop them within "
                                   f"{RESTART_SECONDS:g} s")
            time.sleep(RESTART_POLL_SECONDS)

    def _await_replacements(self, gone: set[str], count: int, deadline: float) -> None:
        """Wait until the scheduler has dropped ``gone`` and has ``count`` workers again."""
        while time.monotonic() < deadline:
            if self._engine.stopping():
                return
            self._cluster.keep_whole(self._engine.workers)
            workers = set(self._cluster.client.scheduler_info(n_workers=-1)["workers"])
            if not workers & gone and len(workers) >= count:
                return
            time.sleep(RESTART_POLL_SECONDS)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (a little at least: a call that has none fails fast)."""
    return max(0.1, deadline - time.monotonic())


def _known_keys(keys: list[str], dask_scheduler: Any) -> list[str]:
    """Run on the Dask scheduler: which of ``keys`` it still knows."""
    return [key for key in keys if key in dask_scheduler.tasks]
