"""``corework run``'s progress on stderr: a live bar on a terminal, status lines otherwise.

It counts records as their results come back from the pool (the scheduler has no
progress events yet). On a terminal: a tqdm bar if tqdm is installed, else a rich one,
else the plain lines. Not on a terminal: one line every few seconds, for logs.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

__all__ = ["Progress", "make_progress"]

STATUS_EVERY = 5.0  # seconds between status lines when stderr is not a terminal


class Progress:
    """Counts records; shows nothing (``--quiet``). The subclasses show the counts."""

    def __init__(self, total: int | None, skipped: int = 0) -> None:
        self.total = total
        self.skipped = skipped  # already done, from the journal: shown as done
        self.succeeded = 0
        self.failed = 0
        self.started = time.monotonic()

    @property
    def done(self) -> int:
        return self.skipped + self.succeeded + self.failed

    def advance(self, succeeded: int, failed: int) -> None:
        self.succeeded += succeeded
        self.failed += failed
        self._show()

    def _show(self) -> None:
        """Bring the display up to date (called after each batch of results)."""

    def close(self) -> None:
        """Stop showing progress (the summary follows)."""

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.succeeded + self.failed) / elapsed if elapsed > 0 else 0.0

    def status(self) -> str:
        """``1,234/10,000 (12%) done, 2 failed, 350/s, ETA 25s``."""
        rate = self.rate()
        total = f"/{self.total:,} ({self.done / self.total:.0%})" if self.total else ""
        text = f"{self.done:,}{total} done, {self.failed:,} failed, {rate:,.0f}/s"
        if self.total and rate > 0:
            text += f", ETA {_duration(max(0, self.total - self.done) / rate)}"
        return text


class _Lines(Progress):
    """One status line every :data:`STATUS_EVERY` seconds, from a small thread, so a
    line comes even while every worker is busy with a long record."""

    def __init__(self, total: int | None, skipped: int, out: IO[str]) -> None:
        super().__init__(total, skipped)
        self._out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="corework-run-progress",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(STATUS_EVERY):
            print(f"corework run: {self.status()}", file=self._out, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Tqdm(Progress):
    def __init__(self, total: int | None, skipped: int, out: IO[str]) -> None:
        from tqdm import tqdm

        super().__init__(total, skipped)
        self._bar: Any = tqdm(total=total, initial=skipped, file=out, unit=" records",
                              dynamic_ncols=True, smoothing=0.1)

    def _show(self) -> None:
        self._bar.update(self.done - self._bar.n)
        if self.failed:
            self._bar.set_postfix_str(f"{self.failed:,} failed", refresh=False)

    def close(self) -> None:
        self._bar.close()


class _Rich(Progress):
    def __init__(self, total: int | None, skipped: int, out: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        super().__init__(total, skipped)
        self._bar = Bar(BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TimeRemainingColumn(), TextColumn("{task.fields[failed]}"),
                        console=Console(file=out))
        self._task = self._bar.add_task("run", total=total, completed=skipped, rate="",
                                        failed="")
        self._bar.start()

    def _show(self) -> None:
        failed = f"{self.failed:,} failed" if self.failed else ""
        self._bar.update(self._task, completed=self.done, rate=f"{self.rate():,.0f}/s",
                         failed=failed)

    def close(self) -> None:
        self._bar.stop()


def make_progress(total: int | None, skipped: int, *, quiet: bool,
                  out: IO[str] | None = None) -> Progress:
    """The right display for ``out`` (stderr by default)."""
    out = out or sys.stderr
    if quiet:
        return Progress(total, skipped)
    if not out.isatty():
        return _Lines(total, skipped, out)
    for kind in (_Tqdm, _Rich):
        try:
            return kind(total, skipped, out)
        except ImportError:
            continue
    return _Lines(total, skipped, out)


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
