"""The scheduler's state: which chunks wait, which slot runs which, which slots are idle,
and whether the pool still takes work.

Everything here is read and changed with the scheduler's lock held, and the structure
says so: the one way to the :class:`Board` is ``with guarded as board:`` (a
:class:`Guarded` holds the lock for the block), so no method needs a "lock held" rule."""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

from .._errors import PoolClosed
from .assembly import owner
from .chunk import Chunk, ChunkSink
from .timer import Timer

T = TypeVar("T")


class Guarded(Generic[T]):
    """A value reachable only with ``lock`` held: ``with guarded as value: ...``.

    ``lock`` is an RLock for one reason: a KeyboardInterrupt can land in ``__enter__``
    just after the lock was taken, before the ``with`` block starts (Python's own
    ``with lock:`` cannot be cut there; a method can), and an RLock tells whether this
    thread holds it, so ``__enter__`` lets go before the interrupt goes on. Without
    that, Ctrl-C left the lock held and the pool's own cleanup waited for it for ever
    (``corework run`` on 3.13t, one Ctrl-C in ten)."""

    def __init__(self, lock: threading.RLock, value: T) -> None:
        self._lock = lock
        self._value = value

    def __enter__(self) -> T:
        try:
            self._lock.acquire()
        except BaseException:  # interrupted while waiting, or just after taking it
            if self._lock._is_owned():  # type: ignore[attr-defined]
                self._lock.release()
            raise
        return self._value

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._lock.release()


class Board:
    """The queues and slots of one scheduler, and its deadlines (``timer``)."""

    def __init__(self, slots: int, group: Callable[[int], int], timer: Timer,
                 quiet: threading.Condition) -> None:
        self.group = group  # the slot group (worker process) of a slot
        self.timer = timer
        self.quiet = quiet  # notified when nothing is left to do
        self.pending: deque[Chunk] = deque()
        self.alone: deque[Chunk] = deque()  # suspects: each runs with nothing beside it
        self.isolating: set[int] = set()  # slot groups that run one of them each, alone
        self.idle: list[int] = []
        # Slots whose first worker is still starting, and the chunk promised to each: as
        # in concurrent.futures, work handed to a worker counts as started at once (so
        # shutdown(cancel_futures=True) just after submit() leaves it to run).
        self.booting: dict[int, Chunk | None] = dict.fromkeys(range(slots))
        self.running: dict[int, Chunk] = {}
        self.ending = 0  # chunks taken off a slot whose outcome is not yet handed on
        self.tasks_run: dict[int, int] = {}  # slot -> tasks its current worker has run
        self.closed = False  # takes no new work
        self.stopped = False  # dispatches nothing more; the timer thread ends
        self.stop_when_quiet = False
        self.broken: BaseException | None = None

    def check_open(self) -> None:
        """Raise if no new work may be submitted."""
        if self.broken is not None:
            error = copy.copy(self.broken)  # a fresh traceback each time it is raised
            raise error.with_traceback(None) from self.broken.__cause__
        if self.closed:
            raise PoolClosed("cannot submit work after the pool was shut down")

    def busy(self) -> bool:
        """Is any submitted work not yet settled?"""
        return bool(self.pending or self.alone or self.running or self.timer.held()
                    or self.ending or any(self.booting.values()))

    def queue_front(self, chunk: Chunk) -> None:
        """Queue a chunk to run before new work."""
        (self.alone if chunk.alone else self.pending).appendleft(chunk)

    def start_idle(self) -> list[tuple[int, Chunk]]:
        """Give queued chunks to the idle slots that may take them: the starts to send."""
        starts = []
        for slot in reversed(self.idle[:]):  # the slot freed last first: it is warm
            if not (self.pending or self.alone):
                break
            chunk = self._take_for(slot)
            if chunk is not None:
                self.idle.remove(slot)
                self._start_on(slot, chunk)
                starts.append((slot, chunk))
        if self.booting and self.pending:
            self._promise_to_booting()
        return starts

    def free(self, slot: int) -> None:
        """``slot`` can take a chunk."""
        if slot not in self.idle:
            self.idle.append(slot)

    def finish_on(self, slot: int) -> Chunk | None:
        """The slot's chunk is over; forget it and its deadline. It counts as *ending*
        until its outcome (or its re-run) is handed on, so the pool is not quiet yet."""
        self.timer.forget(slot)
        chunk = self.running.pop(slot, None)
        if chunk is not None:
            self.ending += 1
        return chunk

    def worn_out(self, slot: int, tasks: int, limit: int | None) -> bool:
        """Count ``tasks`` run on ``slot``; True if its worker is to be recycled."""
        self.tasks_run[slot] = self.tasks_run.get(slot, 0) + tasks
        return limit is not None and self.tasks_run[slot] >= limit and not self.stopped

    def slot_of(self, sink: ChunkSink) -> int | None:
        """The slot running the chunk owned by ``sink``, if one is."""
        return next((s for s, c in self.running.items() if owner(c.sink) is sink), None)

    def unqueue(self, sink: ChunkSink) -> Chunk | None:
        """Take a chunk owned by ``sink`` out of the queues (or the timer's hold)."""
        for queue in (self.pending, self.alone):
            for chunk in queue:
                if owner(chunk.sink) is sink:
                    queue.remove(chunk)
                    return chunk
        for slot, promised in self.booting.items():
            if promised is not None and owner(promised.sink) is sink:
                self.booting[slot] = None
                return promised
        return self.timer.release(sink)

    def drop_queued(self) -> list[Chunk]:
        """Forget every chunk that has not started, and return them."""
        dropped = [*self.alone, *self.pending, *self.timer.take_held()]
        self.pending.clear()
        self.alone.clear()
        return dropped

    def drop_all(self) -> list[Chunk]:
        """Forget every chunk not yet settled, and return them."""
        orphans = [*self.drop_queued(), *self.running.values(),
                   *(c for c in self.booting.values() if c is not None)]
        self.booting.clear()
        self.isolating.clear()
        self.running.clear()
        self.timer.clear()
        self.quiet.notify_all()
        return orphans

    def _take_for(self, slot: int) -> Chunk | None:
        """The chunk the free ``slot`` runs next, if any.

        A suspect runs alone in a slot group (a worker process): a group chosen for one
        takes nothing new on its other slots until it is free of other chunks, then runs
        the suspect and nothing beside it. Groups are chosen while there are more
        suspects waiting than groups at work on them, so several run at once."""
        group = self.group(slot)
        if group not in self.isolating and len(self.isolating) < len(self.alone):
            self.isolating.add(group)
        if group in self.isolating:
            if any(self.group(busy) == group for busy in self.running):
                return None  # draining: the suspect waits for the others to end
            chunk = _take(self.alone)
            if chunk is not None:
                return chunk
            self.isolating.discard(group)  # no suspect left for it
        return _take(self.pending)

    def _promise_to_booting(self) -> None:
        """Give each starting slot without one a chunk to run first."""
        for slot, promised in self.booting.items():
            if promised is None:
                chunk = _take(self.pending)
                if chunk is None:
                    return
                self.booting[slot] = chunk

    def _start_on(self, slot: int, chunk: Chunk) -> None:
        """``chunk`` runs on ``slot`` from now, until its deadline."""
        self.running[slot] = chunk
        if chunk.policy.timeout is not None:
            self.timer.limit(slot, chunk.policy.timeout)


def _take(queue: deque[Chunk]) -> Chunk | None:
    """The next chunk of ``queue`` whose owner still wants it."""
    while queue:
        chunk = queue.popleft()
        # A chunk back in the queue (it never reached a worker) was claimed before.
        if chunk.sink.wanted() if chunk.claimed else chunk.sink.claim(chunk):
            chunk.claimed = True
            return chunk
    return None
