"""Where a single task's outcome goes (its Future), and the guards around handing
outcomes on: a done-callback that raises never stops corework's thread, and one that
calls ``shutdown()`` from that thread is not left waiting for itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .._errors import Cancelled
from ..engines import ChunkReport
from .chunk import Chunk
from .future import Future
from .outcomes import task_exception

log = logging.getLogger("corework")


class FutureSink:
    """Sends a single-task chunk's outcome to its Future."""

    def __init__(self, future: Future[Any],
                 translate: Callable[[BaseException], BaseException]) -> None:
        self.future = future
        self.translate = translate

    def claim(self, chunk: Chunk) -> bool:
        return self.future.set_running_or_notify_cancel()

    def wanted(self) -> bool:
        return not self.future.done()

    def deliver(self, chunk: Chunk, report: ChunkReport) -> None:
        failure = report.error or report.failures.get(0)
        with callbacks_of(self.future):
            if failure is None:
                self.future.set_result(report.results[0])
            else:
                self.future.set_exception(self.translate(
                    task_exception(failure, chunk.describe(0), report.remote)))

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        with callbacks_of(self.future):
            if isinstance(error, Cancelled) and self.future.cancel():
                with contextlib.suppress(RuntimeError):  # already notified
                    self.future.set_running_or_notify_cancel()  # else wait() never sees it
                return
            if not self.future.done():
                self.future.set_exception(self.translate(chunk.blame(error)))


@contextlib.contextmanager
def callbacks_of(future: Future[Any]) -> Iterator[None]:
    """Settling a future runs its done-callbacks here; concurrent.futures logs what they
    raise but lets a BaseException (SystemExit, KeyboardInterrupt) through. Log that too:
    the thread settling futures serves the whole pool."""
    try:
        yield
    except BaseException:
        log.exception("a done-callback of %r raised; corework's thread goes on", future)
