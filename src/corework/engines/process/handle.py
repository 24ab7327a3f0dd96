"""The caller's handle on one worker process of the process engine (its socket, pid,
running chunks and fate), and what the worker's death means for each of its chunks."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ..._errors import MemoryLimitExceeded, SerializationError, WorkerCrashed
from ...transport.channel import Channel, Message
from ...transport.failure import Failure
from ..contract import FunctionRef
from .launcher import LauncherClient
from .platform import describe_exit

__all__ = ["EXIT_REPORT_TIMEOUT", "FUNCTIONS_PER_WORKER", "Death", "WorkerHandle",
           "unpack_body"]

#: How long to wait for the launcher's report of a dead worker's exit code.
EXIT_REPORT_TIMEOUT = 5.0
#: How many task functions a worker keeps; older ones are forgotten and resent if needed.
FUNCTIONS_PER_WORKER = 32


class WorkerHandle:
    """The caller's view of one worker process (the slots of one group)."""

    def __init__(self, index: int, pid: int, conn: Channel, threads: int,
                 launcher: LauncherClient) -> None:
        self.index = index
        self.pid = pid
        self.launcher = launcher  # the one that started it: it reports its exit
        self.conn = conn
        self.threads = threads  # task threads it has been told to run
        self.ready = False
        self.running: dict[int, int] = {}  # thread -> id of the chunk it was sent
        self.firsts: dict[int, int] = {}  # thread -> its chunk's first task's index
        self.loading: dict[int, int] = {}  # function id -> threads sent it before "loaded"
        self.unsent: set[int] = set()  # threads whose chunk could not be written: dead
        self.killed_for: int | None = None  # the slot whose task kill() stopped
        self.probing = False  # its first chunk is being probed
        self.retiring = False  # told to exit by restart(): its end is no loss
        self.over_limit: int | None = None  # the RSS that got it killed
        self.reported = False  # its loss is being reported: a chunk sent now is an orphan
        self.doomed = False  # its launcher died, so it dies too: send it nothing more
        self.send_lock = threading.Lock()
        self.functions: OrderedDict[int, None] = OrderedDict()  # ids this worker holds


    def send_function(self, fn: FunctionRef, thread: int,
                      sending_shares: Callable[[Iterable[str]], None]) -> None:
        """With the send lock held: send the function to be run by ``thread`` unless the
        worker has it (and say which ones to forget); the shares in it are told to
        ``sending_shares`` first."""
        if fn.id in self.functions:
            self.functions.move_to_end(fn.id)
            if fn.id in self.loading.values():
                self.loading[thread] = fn.id  # still loading there: this waits for it
            return
        self.functions[fn.id] = None
        self.loading[thread] = fn.id
        forget = []
        while len(self.functions) > FUNCTIONS_PER_WORKER:
            forget.append(self.functions.popitem(last=False)[0])
        sending_shares(fn.blob.share_ids)
        self.conn.send(("function", fn.id, forget), fn.blob)

    def wait_exit(self) -> int | None:
        """Its exit code, as its launcher reports it (None if that takes too long)."""
        return self.launcher.wait_exit(self.pid, EXIT_REPORT_TIMEOUT)


class Death:
    """What a worker's death means for the chunk of each of its threads."""

    def __init__(self, worker: WorkerHandle, code: int | None, how: str,
                 memory_limit: int | None, workers: int) -> None:
        self.worker = worker
        self.code = code
        self.what = f"worker process {worker.pid} died with {how}"
        self.memory_limit = memory_limit
        self.killed = None if worker.killed_for is None else worker.killed_for // workers
        running = [t for t in worker.running if t != self.killed]
        self.shared = len(running) > 1  # several chunks ran in it: which one was it?

    @classmethod
    def of(cls, worker: WorkerHandle, code: int | None, memory_limit: int | None,
           workers: int) -> Death:
        """The death of ``worker``, which exited with ``code`` (None: not known)."""
        how = describe_exit(code) if code is not None or worker.launcher.alive else (
            "its launcher (the process that starts workers ended, and its workers with it)")
        return cls(worker, code, how, memory_limit, workers)

    def error_for(self, thread: int) -> WorkerCrashed:
        """With the worker's send lock held: the error of the chunk ``thread`` ran (a
        chunk sent after the death was seen counts as never started)."""
        worker, code = self.worker, self.code
        if self.killed is not None and thread != self.killed:
            return WorkerCrashed(f"{self.what}: it was stopped to end another of its tasks",
                                 exitcode=code, collateral=True)
        # A thread with nothing running when the death was seen started nothing: a chunk
        # the scheduler gives its slot before it hears of the loss is never sent.
        started = thread in worker.running and thread not in worker.unsent \
            and thread not in worker.loading
        if worker.over_limit is not None and self.memory_limit is not None:
            return MemoryLimitExceeded(
                f"worker process {worker.pid} used {_format_bytes(worker.over_limit)}, over "
                f"its memory_limit of {_format_bytes(self.memory_limit)}, and was killed",
                exitcode=code, started=started, shared=self.shared)
        return WorkerCrashed(self.what, exitcode=code, started=started, shared=self.shared)


def unpack_body(message: Message) -> Any:
    """A message's body; whatever unpickling it raises (SystemExit too) becomes a Failure
    that says where it happened: the reader thread must outlive any result."""
    try:
        return message.unpack()
    except BaseException as exc:  # e.g. a class that can't be imported here
        error = SerializationError(
            f"the task's result could not be unpickled here, in the caller: "
            f"{type(exc).__name__}: {exc}", stage="unpickle-result", original=exc)
        error.__cause__ = exc
        return Failure(error, "SerializationError", str(error), "")


def _format_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"  # pragma: no cover
