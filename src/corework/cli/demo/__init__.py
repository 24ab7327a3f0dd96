"""``corework demo``: the threads-versus-processes lesson, measured on this machine.

Each claim of the lesson is an experiment, run serially and through ``corework.map`` on
threads, processes and (where this Python has them) sub-interpreters:

* cpu: a pure-Python loop. Threads share one GIL and gain nothing; processes (and
  sub-interpreters) have a GIL each and scale with the cores.
* io: the lesson's ``square_numbers`` (``i * i``, then a sleep). Waiting releases the GIL,
  so threads overlap the waits, more of them than there are cores.
* native: numpy matrix products, which release the GIL: threads scale.
* start-up time and memory per worker: processes cost more of both.
* free-threading: the cpu loop on threads in a free-threaded CPython (this one, or one
  found on this machine).
* a race: threads that read, yield and write a shared counter lose updates; a lock fixes it.

The report ends with a verdict per claim; a chart is written as PNG (with matplotlib)
and as a self-contained HTML page.

``python -m corework.cli.demo`` is ``corework demo``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

import corework as cw

from .._args import positive

if TYPE_CHECKING:
    from pathlib import Path

    from .records import Settings

__all__ = ["add_parser", "run"]

QUICK_SCALE = 0.3  # --quick: smaller tasks, one run each


def _settings(args: argparse.Namespace) -> Settings:
    from .records import Settings

    workers = args.workers or cw.default_workers()
    scale = args.scale * (QUICK_SCALE if args.quick else 1.0)
    repeats = args.repeats or (3 if args.quick else 5)
    return Settings(workers=workers, cores=cw.default_workers(), scale=scale, repeats=repeats)


def _progress(part: str) -> None:
    if sys.stderr.isatty():
        print(f"\rmeasuring: {part:<24}", end="", file=sys.stderr, flush=True)


def _write_chart(results: Any, found: Any, report: str, output: Path) -> list[str]:
    from . import chart as _demo_chart

    output.mkdir(parents=True, exist_ok=True)
    lines = []
    try:
        _demo_chart.write_png(results, output / "demo.png")
    except ImportError:
        lines.append("chart: not drawn: matplotlib is not installed "
                     "(pip install 'corework[chart]')")
    else:
        lines.append(f"chart: {output / 'demo.png'}")
    _demo_chart.write_html(results, found, report, output / "demo.html")
    lines.append(f"page: {output / 'demo.html'}")
    return lines


def run(args: argparse.Namespace) -> int:
    # The experiments (psutil, cloudpickle, numpy) are imported when the demo runs, not
    # for ``corework --help``.
    import tempfile
    from pathlib import Path

    from . import table as _demo_table
    from .experiments import measure

    started = time.perf_counter()
    results = measure(_settings(args), say=_progress)
    if sys.stderr.isatty():
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    found = _demo_table.verdicts(results)
    report = _demo_table.render(results, found)
    print(report)
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="corework-demo-"))
    print()
    print("\n".join(_write_chart(results, found, report, output)))
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="the threads-vs-processes lesson, measured on this machine",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--workers", type=positive(int), default=None,
                        help="workers for the cpu and native tasks (default: the cores here); "
                             "io runs 4 times as many")
    parser.add_argument("--scale", type=positive(float), default=1.0,
                        help="multiply every task's size (default 1.0: about 30 s in all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller tasks ({QUICK_SCALE} x --scale), fewer runs: about 10 s")
    parser.add_argument("--repeats", type=positive(int), default=None,
                        help="runs of each measurement, the best kept (default 5, 3 with "
                             "--quick; io at most 2)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="where to write demo.png and demo.html (default: a new "
                             "temporary directory, printed at the end)")
    parser.set_defaults(run=run)


if __name__ == "__main__":
    from .. import main

    sys.exit(main(["demo", *sys.argv[1:]]))
