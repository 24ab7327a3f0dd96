"""The command line of ``corework run``: its options, their types and their help."""

from __future__ import annotations

import argparse
from typing import Any

from .._args import FORMATS, parse_size, positive

#: The longest input line read as a record; a longer one is a failed record, read past
#: without being held in memory.
MAX_RECORD_BYTES = 256 * 1024 * 1024

__all__ = ["add_parser"]


def _chunksize(text: str) -> int | str:
    return "auto" if text == "auto" else positive(int)(text)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``run`` subcommand's parser, added to ``commands``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "run", help="apply a function to every record of a file, in parallel, resumably",
        description="Apply TARGET to every record of the input, on every core. Output: one "
                    "JSON line per record with its index, result or error, and attempts.",
    )
    parser.add_argument("target", metavar="TARGET",
                        help="package.module:function or path/to/file.py:function")
    _input_output(parser)
    _journal(parser)
    _pool(parser)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress and no summary on stderr")
    _list_engines_in_help(parser)
    return parser


_ENGINES_HELP = "one of the engines (default: auto)"


def _list_engines_in_help(parser: argparse.ArgumentParser) -> None:
    """``run --help`` names every engine of ``cw.ENGINES``; looked up only when the help
    is shown, so ``corework --help`` imports no engine."""
    format_help = parser.format_help

    def with_engines() -> str:
        import corework as cw

        for action in parser._actions:
            if action.help == _ENGINES_HELP:
                action.help = f"{', '.join(cw.ENGINES)} (default: auto)"
        return format_help()
    parser.format_help = with_engines  # type: ignore[method-assign]


def _input_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", default="-", metavar="FILE",
                        help="JSON lines, CSV or text lines (default: - for standard input)")
    parser.add_argument("-o", "--output", default="-", metavar="FILE",
                        help="where the JSON lines go (default: - for standard output)")
    parser.add_argument("--format", choices=FORMATS,
                        help="the input's format (default: by extension; jsonl for stdin)")
    parser.add_argument("--typed", action="store_true",
                        help="CSV: fields that read as JSON numbers, true, false or null "
                             "become those values (default: every field is a string)")
    parser.add_argument("--ordered", action="store_true",
                        help="output in input order (default: as records finish)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first malformed input line (exit code 2)")
    parser.add_argument("--max-record-bytes", type=parse_size, default=MAX_RECORD_BYTES,
                        metavar="SIZE",
                        help="an input line longer than this is a failed record, not read "
                             "into memory (default: 256MiB)")


def _journal(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", metavar="PATH",
                        help="SQLite journal: run the same command again after a crash or "
                             "Ctrl-C and it finishes what is left")
    parser.add_argument("--retry-failed", action="store_true",
                        help="with --journal: run again the records that failed before "
                             "(with the function as it is now, even if it changed: the "
                             "records that succeeded are kept)")
    parser.add_argument("--max-failures", type=positive(int), metavar="N",
                        help="stop the run once N records have failed (malformed input "
                             "lines included); with --journal, --retry-failed resumes")


def _pool(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="auto", help=_ENGINES_HELP)
    parser.add_argument("--address", metavar="URL",
                        help="with --engine dask: the Dask scheduler, e.g. "
                             "tcp://127.0.0.1:8786 (default: a LocalCluster started here)")
    parser.add_argument("--workers", type=positive(int), metavar="N",
                        help="tasks at once (default: the cores here)")
    parser.add_argument("--timeout", type=positive(float), metavar="SECONDS",
                        help="per record: past it the record fails with TaskTimeout")
    parser.add_argument("--retries", type=positive(int, zero=True), default=0, metavar="K",
                        help="run a record that crashed, timed out or hit the memory "
                             "limit up to K more times")
    parser.add_argument("--memory-limit", metavar="SIZE",
                        help="kill and replace a worker past this RSS, e.g. 2GiB")
    parser.add_argument("--chunksize", type=_chunksize, default="auto", metavar="N",
                        help="records sent to a worker at once (default: auto)")
