"""Dispatch: queued chunks go to idle slots, and the pool knows when it is quiet.

Every change to the :class:`~.board.Board` that may free work for a slot ends in
:meth:`Dispatch.start_idle` (under the lock), and the chunks it picks are sent with
:meth:`Dispatch.send` once the lock is let go: an engine's ``send`` never runs under it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .._handing_on import handing_on
from ..engines import Engine
from .board import Board, Guarded
from .chunk import Chunk

Starts = list[tuple[int, Chunk]]


class Dispatch:
    """Queues chunks on the board and sends them to the slots that may take them."""

    def __init__(self, engine: Engine, guarded: Guarded[Board],
                 quiet: threading.Condition) -> None:
        self.engine = engine
        self.guarded = guarded
        self.quiet = quiet  # notified when nothing is left to do

    def check_open(self) -> None:
        """Raise if no new work may be submitted."""
        with self.guarded as board:
            board.check_open()

    def enqueue(self, chunk: Chunk) -> None:
        """Queue a new chunk; it starts at once if a slot is idle."""
        with self.guarded as board:
            board.check_open()
            board.pending.append(chunk)
            starts = self.start_idle(board)
        self.send(starts)

    def requeue(self, chunk: Chunk) -> None:
        """Queue a re-run ahead of new work (also after shutdown, which waits for it)."""
        with self.guarded as board:
            broken = board.broken
            if broken is None:
                board.queue_front(chunk)
                starts = self.start_idle(board)
        if broken is not None:
            chunk.sink.fail(chunk, broken)
            return
        self.send(starts)

    def hold(self, chunk: Chunk, seconds: float) -> None:
        """Queue a re-run once ``seconds`` have passed (a retry's backoff)."""
        with self.guarded as board:
            board.timer.hold(chunk, seconds)

    def start_idle(self, board: Board) -> Starts:
        """The chunks to send now to idle slots; tells waiters if the pool went quiet."""
        starts = board.start_idle()
        self.notify_if_quiet(board)  # claim() may have dropped the last chunks
        return starts

    def send(self, starts: Starts) -> None:
        """Outside the lock: hand each picked chunk to its slot's worker."""
        for slot, chunk in starts:
            self.engine.send(slot, chunk.work)

    def notify_if_quiet(self, board: Board) -> None:
        if not board.busy():
            self.quiet.notify_all()
            if board.stop_when_quiet:
                self.stop_soon(board)

    @contextlib.contextmanager
    def ending(self) -> Iterator[None]:
        """Around handing on a chunk that ``Board.finish_on`` took off its slot."""
        try:
            with handing_on():
                yield
        finally:
            with self.guarded as board:
                board.ending -= 1
                self.notify_if_quiet(board)

    def stop_soon(self, board: Board) -> None:
        """Let the engine's workers finish and exit (no waiting)."""
        if not board.stopped:
            self.mark_stopped(board)
            self.engine.stop(wait=False)

    @staticmethod
    def mark_stopped(board: Board) -> None:
        """No more dispatching; the timer thread ends."""
        board.stopped = True
        board.timer.interrupt()
