"""Progress of a map, for ``cw.map(..., progress=True)``, ``cw.imap``, ``cw.progress()`` and
``corework run``.

An observer outside the scheduler: it counts results as they come back from the pool, a
chunk at a time (:func:`observe` wraps the chunk iterator). Where it shows them:

- in a Jupyter kernel: a notebook widget (``tqdm.notebook``, which needs ipywidgets), else
  a text bar in the cell (tqdm, or rich), else the plain lines below;
- on a terminal: a rich bar if rich is installed, else a tqdm one, else the plain lines;
- otherwise (a log, a pipe): one status line every few seconds.

tqdm comes with the ``progress`` extra; without it and without rich, the plain lines.
Instead of ``True`` a map's ``progress=`` takes the user's own display — a tqdm bar or
a rich ``Progress`` (corework advances it, adds its total, and leaves closing it to its
owner) — or a callable, called with ``(done, total, failed)`` after each batch of
results (``total`` None where the input has no length): see :func:`check`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sized
from typing import IO, Any, TypeVar

from .._signals import block_in_this_thread

__all__ = ["Progress", "observe", "progress"]

T = TypeVar("T")

STATUS_EVERY = 5.0  # seconds between status lines when stderr is not a terminal


class Progress:
    """A progress display's counts: ``total`` (None: unknown), ``skipped`` (done before,
    shown as done), ``succeeded`` and ``failed``; :meth:`advance` adds to them and
    :meth:`close` ends the display. This base shows nothing (``quiet``); the displays
    :func:`progress` picks are its subclasses."""

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
        """Count ``succeeded`` and ``failed`` more items done, and show it."""
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

    def __init__(self, total: int | None, skipped: int, out: IO[str], label: str) -> None:
        super().__init__(total, skipped)
        self._out = out
        self._label = label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="corework-progress",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        block_in_this_thread()  # Ctrl-C is the main thread's (see corework._signals)
        while not self._stop.wait(STATUS_EVERY):
            print(f"{self._label}: {self.status()}", file=self._out, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Tqdm(Progress):
    def __init__(self, total: int | None, skipped: int, out: IO[str], label: str,
                 unit: str) -> None:
        from tqdm import tqdm

        super().__init__(total, skipped)
        self._bar: Any = tqdm(total=total, initial=skipped, file=out, unit=unit, desc=label,
                              dynamic_ncols=True, smoothing=0.1)

    def _show(self) -> None:
        self._bar.update(self.done - self._bar.n)
        if self.failed:
            self._bar.set_postfix_str(f"{self.failed:,} failed", refresh=False)

    def close(self) -> None:
        self._bar.close()


class _TqdmNotebook(_Tqdm):
    """A Jupyter widget (tqdm.notebook); needs ipywidgets, else ImportError."""

    def __init__(self, total: int | None, skipped: int, out: IO[str], label: str,
                 unit: str) -> None:
        from tqdm.notebook import IProgress, tqdm

        if IProgress is None:  # no ipywidgets: tqdm would warn, then fail
            raise ImportError("ipywidgets is not installed")
        Progress.__init__(self, total, skipped)
        self._bar = tqdm(total=total, initial=skipped, unit=unit, desc=label, smoothing=0.1)


class _Rich(Progress):
    def __init__(self, total: int | None, skipped: int, out: IO[str], label: str,
                 unit: str) -> None:
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


def progress(total: int | None = None, skipped: int = 0, *, quiet: bool = False,
             out: IO[str] | None = None, label: str = "corework",
             unit: str = " tasks") -> Progress:
    """A progress display of ``total`` items (``skipped`` of them done before), the
    one ``cw.map(..., progress=True)`` shows: a widget in Jupyter, a tqdm or rich bar on a
    terminal, a status line every few seconds elsewhere (``out``: stderr by default);
    nothing with ``quiet``. Count with :meth:`Progress.advance`, end with ``close()``."""
    out = out or sys.stderr
    if quiet:
        return Progress(total, skipped)
    if _in_jupyter() and out in (sys.stderr, sys.stdout):
        kinds: tuple[type[_Tqdm] | type[_Rich], ...] = (_TqdmNotebook, _Tqdm, _Rich)
    elif out.isatty():
        kinds = (_Rich, _Tqdm)
    else:
        kinds = ()
    for kind in kinds:
        try:
            return kind(total, skipped, out, label, unit)
        except ImportError:
            continue
    return _Lines(total, skipped, out, label)


class _UserTqdm(Progress):
    """The user's own tqdm bar: advanced, given the total if it has none; not closed."""

    def __init__(self, bar: Any, total: int | None) -> None:
        super().__init__(total)
        self._bar = bar
        self._shown = 0
        if total is not None and getattr(bar, "total", None) is None:
            bar.total = total
            bar.refresh()

    def _show(self) -> None:
        self._bar.update(self.done - self._shown)
        self._shown = self.done
        if self.failed:
            self._bar.set_postfix_str(f"{self.failed:,} failed")


class _UserRich(Progress):
    """The user's own rich ``Progress``: a task of its own in it (not stopped here)."""

    def __init__(self, bar: Any, total: int | None) -> None:
        super().__init__(total)
        self._bar = bar
        self._task = bar.add_task("corework", total=total)

    def _show(self) -> None:
        self._bar.update(self._task, completed=self.done)


class _Callback(Progress):
    """``fn(done, total, failed)`` after each batch of results."""

    def __init__(self, fn: Callable[[int, int | None, int], object], total: int | None
                 ) -> None:
        super().__init__(total)
        self._fn = fn

    def _show(self) -> None:
        self._fn(self.done, self.total, self.failed)


def check(spec: object) -> object:
    """``spec`` if a map's ``progress=`` can take it (see the module docstring), else
    TypeError: at the call, not at the first result."""
    if spec is None or isinstance(spec, bool) or _kind(spec) is not None:
        return spec
    raise TypeError(f"progress must be True, False, a tqdm bar, a rich Progress or a "
                    f"callable taking (done, total, failed), not {type(spec).__name__}")


def _kind(spec: object) -> Callable[[Any, int | None], Progress] | None:
    if hasattr(spec, "add_task") and hasattr(spec, "update"):
        return _UserRich
    if hasattr(spec, "update") and hasattr(spec, "n"):
        return _UserTqdm
    if callable(spec):
        return _Callback
    return None


def display_for(spec: object, total: int | None) -> Progress:
    """The display a checked ``progress=`` asks for (``True``: :func:`progress`'s)."""
    kind = None if isinstance(spec, bool) else _kind(spec)
    return progress(total) if kind is None else kind(spec, total)


def failed_in(values: list[Any], errors: str) -> int:
    """How many of a batch's values are failures (``errors="return"``/``"outcome"``)."""
    if errors == "outcome":
        return sum(1 for value in values if not value.ok)
    if errors == "return":
        return sum(1 for value in values if isinstance(value, BaseException))
    return 0


def observe(chunks: Iterator[list[T]], total: int | None, spec: object = True,
            errors: str = "raise") -> Iterator[list[T]]:
    """``chunks`` as they are, shown on the display ``spec`` asks for (see :func:`check`)
    while they are read; the display closes when the iteration ends, fails or is closed
    early (the user's own bar is only brought up to date)."""
    display = display_for(spec, total)
    try:
        for values in chunks:
            failed = failed_in(values, errors)
            display.advance(len(values) - failed, failed)
            yield values
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # closed early: stop the work now, not when the generator is collected
        display.close()


def length(items: object) -> int | None:
    """``len(items)`` where the input knows it (a list, a range), else None."""
    if not isinstance(items, Sized):
        return None
    try:
        return len(items)
    except Exception:  # a __len__ that fails: no total, still a progress display
        return None


def _in_jupyter() -> bool:
    """Running in a Jupyter kernel (the notebook, JupyterLab, VS Code), not a terminal."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
