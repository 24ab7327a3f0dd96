"""``corework run TARGET``: apply a function to every record of an input, on every core.

::

    input file ─read lazily─▶ records ─(args, kwargs)─▶ Pool._imap_calls ─▶ outcomes
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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .._errors import RemoteTraceback, SerializationError, TaskError
from .._outcomes import Outcome
from .._policy import TaskPolicy
from .._pool import Pool, parse_chunksize, parse_memory, parse_workers
from .._progress import Progress, make_progress
from ..engines import resolve_engine_name
from ._args import positive
from ._journal import IndexSet, Journal, JournalError
from ._records import FORMATS, Record, format_for, json_line, open_input, read_records, write_lines
from ._target import TargetError, check_picklable, function_identity, load_target

__all__ = ["add_parser", "run"]

SHOWN_ERRORS = 5  # failed records named in the summary
_SCAN_BLOCK = 1 << 20

Row = tuple[int, bool, str]  # (index, succeeded, output line)


class UsageError(Exception):
    """Something the user can fix before the run starts: one line, exit code 2."""


@dataclass
class Tally:
    """What this run did, for the summary and the exit code."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0  # skipped records that had failed before (no --retry-failed)
    errors: list[str] = field(default_factory=list)  # the first few, described

    def add(self, index: int, line: int | None, error: dict[str, Any] | None) -> None:
        if error is None:
            self.succeeded += 1
            return
        self.failed += 1
        if len(self.errors) < SHOWN_ERRORS:
            where = f"record {index}" + (f" (line {line})" if line else "")
            self.errors.append(f"{where}: {error['type']}: {error['message']}")


# ---------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
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


@dataclass
class Plan:
    """A checked command line, ready to run."""

    args: argparse.Namespace
    fn: Callable[..., Any]
    fmt: str
    pool_options: dict[str, Any]
    journal: Journal | None = None
    input_lines: int | None = None
    tally: Tally = field(default_factory=Tally)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        options = _pool_options(args)
        fmt = _input_format(args)
        fn = load_target(args.target)
        if options["engine"] in ("process", "dask"):
            check_picklable(fn, args.target)
        plan = cls(args, fn, fmt, options)
        plan.open_journal()
        return plan

    def open_journal(self) -> None:
        """Open the journal and check it is this run's; count the input's lines."""
        scan = self.args.journal is not None or not self.args.quiet
        digest, self.input_lines = _scan(self.args.input) if scan else (None, None)
        if self.args.journal is None:
            return
        self.journal = Journal(self.args.journal)
        typed = " typed" if self.args.typed else ""
        self.journal.check_identity({"function": function_identity(self.fn),
                                     "input": f"{self.fmt}{typed} {digest}"})

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def execute(self) -> int:
        started = time.monotonic()
        done = self._done_before()
        try:
            with _output(self.args.output, self.journal is None) as out:
                # The pool first: its launcher is forked while this process has no
                # threads yet (the progress display may start one).
                with Pool(**self.pool_options) as pool:
                    progress = make_progress(self._total(), done.count, quiet=self.args.quiet,
                                             label="corework run", unit=" records")
                    try:
                        self._run(pool, done, out, progress)
                    finally:
                        progress.close()
                if self.journal is not None:
                    write_lines(self.journal.lines(ordered=self.args.ordered), out)
        except KeyboardInterrupt:
            print(f"corework run: interrupted. {self._resume_hint()}", file=sys.stderr)
            return 130
        self._summary(time.monotonic() - started)
        return 1 if self.tally.failed or self.tally.skipped_failed else 0

    def _total(self) -> int | None:
        """Records in the input, for the progress display (about: from its line count)."""
        if self.input_lines is None:
            return None
        return max(0, self.input_lines - (1 if self.fmt == "csv" else 0))

    def _done_before(self) -> IndexSet:
        if self.journal is None:
            return IndexSet()
        done = self.journal.done(retry_failed=self.args.retry_failed)
        ok, failed = self.journal.counts()
        self.tally.skipped = done.count
        self.tally.skipped_failed = 0 if self.args.retry_failed else failed
        if done.count:
            rerun = ", running the failed ones again" if self.args.retry_failed and failed else ""
            print(f"corework run: resuming from {self.args.journal}: {ok:,} records "
                  f"succeeded and {failed:,} failed before{rerun}", file=sys.stderr)
        return done

    def _run(self, pool: Pool, done: IndexSet, out: IO[str], progress: Progress) -> None:
        # With a journal the output is written from it, in order, at the end; so results
        # are taken as they finish and committed at once, never held back behind a slow
        # record.
        ordered = self.args.ordered and self.journal is None
        feed = Feed(self.input_stream(), done, self.tally, strict=self.args.strict)
        emit = self._emitter(out)
        try:
            batches = pool._imap_calls(self.fn, feed.calls(), ordered=ordered,
                                         chunksize=self.args.chunksize)
        except SerializationError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        for batch in batches:
            rows: list[Row] = []
            for outcome in batch:
                index, line = feed.take(outcome.index)
                if ordered:
                    rows += feed.held(before=index)
                rows.append(self._row(index, line, outcome))
            if not ordered:
                rows += feed.held(before=None)
            self._emit(emit, rows, progress)
        self._emit(emit, feed.held(before=None), progress)
        if feed.problem is not None:
            raise UsageError(f"{feed.problem} (stopped there: --strict)")

    def input_stream(self) -> Iterator[Record]:
        stream = open_input(self.args.input)
        try:
            yield from read_records(stream, self.fmt, typed=self.args.typed)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    def _emitter(self, out: IO[str]) -> Callable[[list[Row]], None]:
        if self.journal is not None:
            return self.journal.record

        def write(rows: list[Row]) -> None:
            write_lines((line for _, _, line in rows), out)
            out.flush()
        return write

    @staticmethod
    def _emit(emit: Callable[[list[Row]], None], rows: list[Row], progress: Progress) -> None:
        if rows:
            emit(rows)
            ok = sum(1 for row in rows if row[1])
            progress.advance(ok, len(rows) - ok)

    def _row(self, index: int, line: int, outcome: Outcome[Any]) -> Row:
        fields: dict[str, Any] = {"index": index}
        error = None
        if outcome.error is None:
            fields["result"] = outcome.value
        else:
            fields["error"] = error = error_fields(outcome.error)
        fields["attempts"] = outcome.attempts
        self.tally.add(index, line, error)
        return index, error is None, json_line(fields)

    def _resume_hint(self) -> str:
        if self.journal is None:
            return "No --journal was given, so running the command again starts over."
        ok, failed = self.journal.counts()
        return (f"{ok + failed:,} finished records are safe in the journal "
                f"{self.args.journal}; run the same command again to finish the rest.")

    def _summary(self, seconds: float) -> None:
        if self.args.quiet:
            return
        t = self.tally
        skipped = f", {t.skipped:,} skipped (in the journal already)" if t.skipped else ""
        print(f"corework run: {t.succeeded:,} succeeded, {t.failed:,} failed{skipped} "
              f"in {seconds:.1f} s", file=sys.stderr)
        if t.skipped_failed:
            print(f"  {t.skipped_failed:,} of the skipped records had failed; "
                  f"--retry-failed runs them again", file=sys.stderr)
        for error in t.errors:
            print(f"  {error}", file=sys.stderr)
        if t.failed > len(t.errors):
            print(f"  ... and {t.failed - len(t.errors):,} more (see the output)",
                  file=sys.stderr)


# ---------------------------------------------------------------------------- records


class Feed:
    """Turns input records into calls for the pool, remembering which record each call
    is, and holding back malformed records (failed without running) until their place
    in the output comes."""

    def __init__(self, records: Iterator[Record], done: IndexSet, tally: Tally, *,
                 strict: bool) -> None:
        self._records = records
        self._done = done
        self._tally = tally
        self._sent: dict[int, tuple[int, int]] = {}  # call number -> (index, line)
        self._malformed: deque[tuple[int, Row]] = deque()
        self.strict = strict
        self.problem: str | None = None  # with --strict: the malformed line that stopped it

    def calls(self) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        number = 0
        for record in self._records:
            if record.index in self._done:
                continue
            if record.call is None:
                self._hold(record)
                if self.strict:
                    self.problem = record.problem
                    return
                continue
            self._sent[number] = (record.index, record.line)
            number += 1
            yield record.call

    def _hold(self, record: Record) -> None:
        error = {"type": "InputError", "message": record.problem, "traceback": None}
        self._tally.add(record.index, None, error)
        line = json_line({"index": record.index, "error": error, "attempts": 0})
        self._malformed.append((record.index, (record.index, False, line)))

    def take(self, number: int) -> tuple[int, int]:
        """The (index, line) of call ``number``, which has finished."""
        return self._sent.pop(number)

    def held(self, before: int | None) -> list[Row]:
        """Malformed records to write now: those before record ``before`` (all: None)."""
        rows = []
        while self._malformed and (before is None or self._malformed[0][0] < before):
            rows.append(self._malformed.popleft()[1])
        return rows


def error_fields(exc: BaseException) -> dict[str, Any]:
    """``{"type", "message", "traceback"}`` of a record's error; the traceback is the
    worker's, or None for errors that did not come from the function (a timeout)."""
    type_name = exc.type_name if isinstance(exc, TaskError) else type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, RemoteTraceback):
        tb: str | None = cause.tb
    elif exc.__traceback__ is not None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        tb = None
    return {"type": type_name, "message": str(exc), "traceback": tb}


# ---------------------------------------------------------------------------- input, output


def _scan(path: str) -> tuple[str | None, int | None]:
    """One pass over the input file: a digest of every byte, and its line count.

    The whole file is hashed, not its size and mtime (a copy changes the mtime, an edit
    can keep the size) nor its ends (an edit in the middle would go unseen): a resumed
    run must read exactly the records the journal's indices refer to. It costs one
    sequential read, about a second per GB. Standard input is not scanned (see
    :func:`_input_format`).
    """
    if path == "-":
        return None, None
    digest, lines, last = hashlib.sha256(), 0, b"\n"
    try:
        with open(path, "rb") as stream:
            while block := stream.read(_SCAN_BLOCK):
                digest.update(block)
                lines += block.count(b"\n")
                last = block[-1:]
        lines += last != b"\n"  # a last line without its line break
    except OSError as exc:
        raise UsageError(f"cannot read the input {path!r}: {exc.strerror}") from None
    return f"sha256:{digest.hexdigest()}", lines


def _input_format(args: argparse.Namespace) -> str:
    if args.input != "-" and not os.path.exists(args.input):
        raise UsageError(f"no such input file: {args.input!r}")
    if args.input != "-" and os.path.isdir(args.input):
        raise UsageError(f"the input {args.input!r} is a directory")
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


def _pool_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Pool's keyword arguments, each checked by the library's own rules."""
    try:
        engine = resolve_engine_name(args.engine)
        TaskPolicy(args.timeout, args.retries)
        parse_workers(args.workers)
        parse_chunksize(args.chunksize)
        memory = parse_memory(args.memory_limit)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc).replace("_", "-")) from None
    if memory is not None and engine != "process":
        raise UsageError("--memory-limit needs --engine process: threads share one process")
    if args.address is not None and engine != "dask":
        raise UsageError("--address needs --engine dask")
    return {"workers": args.workers, "engine": engine, "timeout": args.timeout,
            "retries": args.retries, "memory_limit": memory, "address": args.address}


@contextlib.contextmanager
def _output(path: str, streaming: bool) -> Iterator[IO[str]]:
    """Where output lines go. Without a journal they stream to ``path`` as they come;
    with one they are written at the end, to a temporary file renamed over ``path``, so
    a killed run never leaves a half-written output behind."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = path if streaming else f"{path}.corework-partial"
    try:
        out = open(target, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot write the output {path!r}: {exc.strerror}") from None
    try:
        with out:
            yield out
    except BaseException:
        if not streaming:
            with contextlib.suppress(OSError):
                os.unlink(target)
        raise
    if not streaming:
        os.replace(target, path)


# ---------------------------------------------------------------------------- arguments


def _chunksize(text: str) -> int | str:
    return "auto" if text == "auto" else positive(int)(text)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "run", help="apply a function to every record of a file, in parallel, resumably",
        description="Apply TARGET to every record of the input, on every core. Output: one "
                    "JSON line per record with its index, result or error, and attempts.",
    )
    parser.add_argument("target", metavar="TARGET",
                        help="package.module:function or path/to/file.py:function")
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
    parser.add_argument("--journal", metavar="PATH",
                        help="SQLite journal: run the same command again after a crash or "
                             "Ctrl-C and it finishes what is left")
    parser.add_argument("--retry-failed", action="store_true",
                        help="with --journal: run again the records that failed before")
    parser.add_argument("--engine", default="auto",
                        help="auto, process, thread or dask (default: auto)")
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
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress and no summary on stderr")
    parser.set_defaults(run=run)
