"""Usage errors of ``corework run``, found before anything runs: one line, exit code 2."""

from __future__ import annotations

import argparse
import os
from typing import Any

import corework as cw

from .._records import format_for

__all__ = ["UsageError", "input_format", "pool_options"]


class UsageError(Exception):
    """Something the user can fix before the run starts: one line, exit code 2."""


def pool_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Pool's keyword arguments, checked by the library's own rules (the numbers are
    checked by their argparse types already)."""
    if args.engine not in cw.ENGINES:
        raise UsageError(f"engine must be one of {', '.join(map(repr, cw.ENGINES))}, "
                         f"not {args.engine!r}")
    engine = "process" if args.engine == "auto" else args.engine  # as Pool's "auto"
    try:
        memory = cw.parse_memory(args.memory_limit)
    except ValueError as exc:
        raise UsageError(str(exc).replace("_", "-")) from None
    if memory is not None and engine != "process":
        raise UsageError("--memory-limit needs --engine process: threads share one process")
    if args.address is not None and engine != "dask":
        raise UsageError("--address needs --engine dask")
    return {"workers": args.workers, "engine": engine, "timeout": args.timeout,
            "retries": args.retries, "memory_limit": memory, "address": args.address}


def input_format(args: argparse.Namespace) -> str:
    """The input's format, once the input and output paths are checked."""
    if args.input != "-" and not os.path.exists(args.input):
        raise UsageError(f"no such input file: {args.input!r}")
    if args.input != "-" and os.path.isdir(args.input):
        raise UsageError(f"the input {args.input!r} is a directory")
    if args.retry_failed and args.journal is None:
        raise UsageError("--retry-failed needs --journal: only a journal knows which "
                         "records failed before")
    if args.journal is not None and args.input == "-":
        # A rerun must be able to check that it reads the same input as the journal
        # records, before it skips anything; standard input cannot be read twice.
        raise UsageError("--journal needs an input file (--input FILE), not standard "
                         "input: save it to a file first, so a rerun can check it is the same")
    if args.output != "-" and args.input != "-" and os.path.exists(args.output) and \
            os.path.samefile(args.input, args.output):
        raise UsageError("--output must not be the input file")
    try:
        return format_for(args.input, args.format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
