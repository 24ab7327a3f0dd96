"""Ctrl-C never leaves corework's locks held, and signals go to the main thread."""

from __future__ import annotations

import signal
import threading

import pytest

from corework._signals import block_in_this_thread
from corework.scheduling.board import Guarded


class InterruptedRightAfterTaking:
    """An RLock whose acquire takes it, then raises as a signal handler would at the end
    of the call (Python checks for pending signals there)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def acquire(self) -> bool:
        self.lock.acquire()
        raise KeyboardInterrupt

    def release(self) -> None:
        self.lock.release()

    def _is_owned(self) -> bool:
        return self.lock._is_owned()  # type: ignore[attr-defined]


def test_an_interrupt_just_after_the_board_lock_was_taken_lets_it_go():
    lock = InterruptedRightAfterTaking()
    guarded = Guarded(lock, "board")  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        with guarded:
            pytest.fail("the block must not run")
    taken = threading.Thread(target=lambda: lock.lock.acquire(timeout=5))
    taken.start()
    taken.join(10)
    assert not lock._is_owned()  # another thread could take it: nobody held it


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX threads only")
def test_corework_threads_leave_ctrl_c_to_the_main_thread():
    seen: list[set[int]] = []

    def thread() -> None:
        block_in_this_thread()
        seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join(10)
    assert signal.SIGINT in seen[0] and signal.SIGTERM in seen[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
