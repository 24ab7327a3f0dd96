"""``corework advise``: measure a function on a sample of its input, on every engine here."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

import corework as cw

from ._args import FORMATS, positive


class Spread:
    """Calls the target with a record's ``(args, kwargs)``: records may hold several."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        args, kwargs = call
        return self.fn(*args, **kwargs)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "advise", help="measure a function on a sample of its input and recommend an engine",
        description="Run TARGET on the first records of the input serially and on each "
                    "engine available here; print the engine to use, why, and the figures.")
    parser.add_argument("target", metavar="TARGET",
                        help="package.module:function or path/to/file.py:function")
    parser.add_argument("-i", "--input", required=True, metavar="FILE",
                        help="JSON lines, CSV or text lines (as for corework run)")
    parser.add_argument("--format", choices=FORMATS, help="the input's format")
    parser.add_argument("--sample", type=positive(int), default=16, metavar="N",
                        help="how many records to measure (default: 16)")
    parser.add_argument("--workers", type=positive(int), metavar="N",
                        help="workers per engine (default: the cores here)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(run=_advise)


def _advise(args: argparse.Namespace) -> int:
    # Imported here, not with the parser: ``corework --help`` needs neither.
    from ._records import format_for, open_input, read_records
    from ._target import TargetError, load_target

    try:
        fn = load_target(args.target)
        with open_input(args.input) as stream:
            fmt = format_for(args.input, args.format)
            records = list(itertools.islice(read_records(stream, fmt), args.sample))
    except (TargetError, OSError, ValueError) as exc:
        print(f"corework advise: error: {exc}", file=sys.stderr)
        return 2
    bad = [record for record in records if record.call is None]
    if bad or not records:
        where = f"line {bad[0].line}: {bad[0].problem}" if bad else "no records"
        print(f"corework advise: error: the sample cannot be read ({where})", file=sys.stderr)
        return 2
    calls = [record.call for record in records if record.call is not None]
    single = all(len(positional) == 1 and not named for positional, named in calls)
    try:
        if single:
            advice = cw.advise(fn, [positional[0] for positional, _ in calls],
                            workers=args.workers)
        else:
            advice = cw.advise(Spread(fn), calls, workers=args.workers)
    except Exception as exc:
        print(f"corework advise: {args.target} raised on the sample: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(advice.as_dict(), indent=2) if args.json else advice)
    return 0
