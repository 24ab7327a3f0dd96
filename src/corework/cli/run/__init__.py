"""``corework run TARGET``: apply a function to every record of an input, on every core.

::

    input file ─read lazily─▶ records ─(args, kwargs)─▶ Pool.imap_batches ─▶ outcomes
        │                        │ malformed: a failed record, never sent        │
        │                        ▼                                               ▼
        │                    output lines ◀────────── one JSON line per record ──┘
        │                        │
        └─ with --journal: ──────┴─▶ SQLite journal, committed as records finish;
           records done before        the output is written from it at the end
           are skipped                (so a resumed run holds each record once)

Output lines: ``{"index": 3, "result": ..., "attempts": 1}`` or
``{"index": 3, "error": {"type": ..., "message": ..., "traceback": ...}, "attempts": 1}``.
Exit codes: 0 every record succeeded, 1 some failed, 2 usage errors, 130 Ctrl-C.

The modules: ``arguments`` (the command line), ``checks`` (usage errors before the run),
``plan`` (the run), ``feed`` (records to calls, outcomes to lines), ``tally`` (the
summary), ``files`` (the input's digest, the output file).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import arguments

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add ``corework run`` to the ``corework`` command's subcommands."""
    arguments.add_parser(commands).set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    # Imported here, not with the parser: ``corework --help`` needs none of the run.
    from .._journal import JournalError
    from .._target import TargetError
    from .checks import UsageError
    from .plan import Plan

    try:
        plan = Plan.from_args(args)
    except (UsageError, TargetError, JournalError) as exc:
        print(f"corework run: {exc}", file=sys.stderr)
        return 2
    try:
        return plan.execute()
    except (UsageError, JournalError) as exc:
        print(f"corework run: {exc}", file=sys.stderr)
        return 2
    finally:
        plan.close()
