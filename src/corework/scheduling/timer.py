"""Deadlines of running chunks and retries waiting out their backoff, and the timer
thread that wakes when the first of them is due.

The timer's state is the scheduler's: it lives on the :class:`~.board.Board` and is only
reached with the scheduler's lock held. The thread itself only calls ``tick`` (the
scheduler's), which does the work and, when there is nothing to do, calls :meth:`sleep`."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable

from .._signals import block_in_this_thread
from .assembly import owner
from .chunk import Chunk, ChunkSink
from .clock import Clock


class Timer:
    """When each slot's chunk times out, and when each delayed retry may run."""

    def __init__(self, lock: threading.RLock, clock: Clock,
                 tick: Callable[[], bool], failed: Callable[[BaseException], None]) -> None:
        self.clock = clock
        self._wakeup = threading.Condition(lock)
        self._deadlines: dict[int, float] = {}  # slot -> when its chunk times out
        self._held: list[tuple[float, int, Chunk]] = []  # retries waiting for backoff
        self._tick = tick  # one round of work; False once the scheduler has stopped
        self._failed = failed
        self._thread: threading.Thread | None = None

    def limit(self, slot: int, seconds: float) -> None:
        """The chunk starting on ``slot`` times out ``seconds`` from now."""
        self._deadlines[slot] = self.clock.now() + seconds
        self.wake()

    def forget(self, slot: int) -> None:
        self._deadlines.pop(slot, None)

    def hold(self, chunk: Chunk, seconds: float) -> None:
        """Keep ``chunk`` back for ``seconds`` (a retry's backoff)."""
        heapq.heappush(self._held, (self.clock.now() + seconds, chunk.work.id, chunk))
        self.wake()

    def held(self) -> list[Chunk]:
        return [chunk for _, _, chunk in self._held]

    def take_held(self) -> list[Chunk]:
        """Take every held chunk (shutdown cancels them)."""
        held = self.held()
        self._held.clear()
        return held

    def release(self, sink: ChunkSink) -> Chunk | None:
        """Take the held chunk owned by ``sink`` (see ``assembly.owner``) back, if any."""
        for entry in self._held:
            if owner(entry[2].sink) is sink:
                self._held.remove(entry)
                heapq.heapify(self._held)
                return entry[2]
        return None

    def expired(self) -> list[int]:
        """The slots whose chunk is past its deadline."""
        now = self.clock.now()
        return [slot for slot, when in self._deadlines.items() if when <= now]

    def due(self) -> list[Chunk]:
        """Take the held chunks whose delay is over, first due first."""
        now = self.clock.now()
        due = []
        while self._held and self._held[0][0] <= now:
            due.append(heapq.heappop(self._held)[2])
        return due

    def clear(self) -> None:
        self._deadlines.clear()
        self._held.clear()

    def wake(self) -> None:
        """(Start and) wake the timer thread: a deadline or a delay may be sooner now."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="corework-timer",
                                            daemon=True)
            self._thread.start()
        self._wakeup.notify()

    def interrupt(self) -> None:
        """Wake the timer thread, if there is one, to see that the scheduler stopped."""
        self._wakeup.notify()

    def sleep(self) -> None:
        """From ``tick``, the lock held: wait until the next deadline or delay, or a wake."""
        times = [*self._deadlines.values(), *(when for when, _, _ in self._held[:1])]
        seconds = max(0.0, min(times) - self.clock.now()) if times else None
        self.clock.sleep(self._wakeup, seconds)

    def join(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        """The timer thread; should it fail anyway, the scheduler hears why."""
        block_in_this_thread()  # Ctrl-C is the main thread's (see corework._signals)
        try:
            while self._tick():
                pass
        except BaseException as exc:
            self._failed(exc)
