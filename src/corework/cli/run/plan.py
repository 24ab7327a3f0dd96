"""A checked ``corework run`` command line, and the run itself: pool, journal, output."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import corework as cw

from .._journal import JOURNAL_LINE_LIMIT, IndexSet, Journal, JournalWriteError
from .._records import Record, open_input, read_records
from .._target import check_picklable, function_identity, load_target
from .checks import UsageError, input_format, pool_options
from .feed import Feed, Row
from .files import Output, OutputError, check_output, output, scan
from .tally import Tally

__all__ = ["Plan"]


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
    replaced_function: str | None = None  # with --retry-failed: the journal's old one
    stopped_early: bool = False  # --max-failures was reached

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        options = pool_options(args)
        fmt = input_format(args)
        check_output(args.output)
        fn = load_target(args.target)
        if options["engine"] in ("process", "dask"):
            check_picklable(fn, args.target)
        plan = cls(args, fn, fmt, options)
        plan.open_journal()
        return plan

    def open_journal(self) -> None:
        """Open the journal and check it is this run's; count the input's lines."""
        scanned = self.args.journal is not None or not self.args.quiet
        digest, self.input_lines = scan(self.args.input) if scanned else (None, None)
        if self.args.journal is None:
            return
        self.journal = Journal(self.args.journal)
        typed = " typed" if self.args.typed else ""
        self.replaced_function = self.journal.check_identity(
            {"function": function_identity(self.fn), "input": f"{self.fmt}{typed} {digest}"},
            retry_failed=self.args.retry_failed)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def execute(self) -> int:
        started = time.monotonic()
        done = self._done_before()
        try:
            # The pool first: its launcher is forked while this process has no threads
            # yet (the progress display may start one); and an engine that cannot run
            # here is a usage error before any output is opened.
            pool = self._pool()
            with output(self.args.output, self.journal is None) as out:
                with pool:
                    progress = cw.progress(self._total(), done.count, quiet=self.args.quiet,
                                           label="corework run", unit=" records")
                    try:
                        self._run(pool, done, out, progress)
                    finally:
                        progress.close()
                if self.journal is not None:
                    out.write_lines(self.journal.lines(ordered=self.args.ordered))
        except KeyboardInterrupt:
            print(f"corework run: interrupted. {self._resume_hint()}", file=sys.stderr)
            return 130
        except (OutputError, JournalWriteError) as exc:
            print(f"corework run: {exc}. {self._resume_hint(output_failed=True)}",
                  file=sys.stderr)
            return 1
        if not self.args.quiet:
            self.tally.print_summary(time.monotonic() - started)
        if self.stopped_early:
            print(f"corework run: stopped after {self.tally.failed:,} failed records "
                  f"(--max-failures {self.args.max_failures}). {self._resume_hint()}",
                  file=sys.stderr)
        return self.tally.exit_code

    def _pool(self) -> cw.Pool:
        try:
            return cw.Pool(**self.pool_options)
        except cw.EngineUnavailable as exc:
            raise UsageError(str(exc).replace("engine=", "--engine ")) from None
        except (ConnectionError, ImportError) as exc:  # a Dask scheduler not there
            raise UsageError(str(exc).replace("address=", "--address ")) from None

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
        if self.replaced_function is not None:
            print(f"corework run: the function changed since the journal was written "
                  f"({self.replaced_function!r} before, now "
                  f"{function_identity(self.fn)!r}): the {ok:,} records that succeeded "
                  f"are kept as they are; the {failed:,} failed ones (and any not run yet) "
                  f"run with the new function", file=sys.stderr)
        return done

    def _run(self, pool: cw.Pool, done: IndexSet, out: Output, progress: cw.Progress) -> None:
        # With a journal the output is written from it, in order, at the end; so results
        # are taken as they finish and committed at once, never held back behind a slow
        # record.
        ordered = self.args.ordered and self.journal is None
        emit = self._emitter(out)
        feed = Feed(self.input_stream(), done, self.tally, strict=self.args.strict,
                    ordered=ordered, emit=lambda rows: self._emit(emit, rows, progress),
                    max_line=None if self.journal is None else JOURNAL_LINE_LIMIT)
        try:
            batches = pool.imap_batches(self.fn, feed.calls(), ordered=ordered,
                                        chunksize=self.args.chunksize, errors="outcome")
        except cw.SerializationError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        for batch in batches:
            self._emit(emit, feed.rows(batch, ordered=ordered), progress)
            if self._too_many_failures():
                # Records still running are not recorded: a rerun runs them. Killing
                # them now is what "stop early" means for a function failing everything.
                pool.kill()
                return
        self._emit(emit, feed.held(before=None), progress)
        if feed.problem is not None:
            raise UsageError(f"{feed.problem} (stopped there: --strict)")

    def _too_many_failures(self) -> bool:
        limit = self.args.max_failures
        self.stopped_early = limit is not None and self.tally.failed >= limit
        return self.stopped_early

    def input_stream(self) -> Iterator[Record]:
        stream = open_input(self.args.input)
        try:
            yield from read_records(stream, self.fmt, typed=self.args.typed,
                                    max_bytes=self.args.max_record_bytes)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    def _emitter(self, out: Output) -> Callable[[list[Row]], None]:
        if self.journal is not None:
            return self.journal.record

        def write(rows: list[Row]) -> None:
            out.write_lines((line for _, _, line in rows), flush=True)
        return write

    @staticmethod
    def _emit(emit: Callable[[list[Row]], None], rows: list[Row],
              progress: cw.Progress) -> None:
        if rows:
            emit(rows)
            ok = sum(1 for row in rows if row[1])
            progress.advance(ok, len(rows) - ok)

    def _resume_hint(self, *, output_failed: bool = False) -> str:
        if self.journal is None:
            return "No --journal was given, so running the command again starts over."
        ok, failed = self.journal.counts()
        again = ("run the command again (with another --output if that one is full) to "
                 "write them and finish the rest" if output_failed else
                 "run the same command again to finish the rest")
        if self.stopped_early:
            again = ("fix the function, then run the same command with --retry-failed to "
                     "run the failed records again and finish the rest")
        return (f"{ok + failed:,} finished records are safe in the journal "
                f"{self.args.journal}; {again}.")
