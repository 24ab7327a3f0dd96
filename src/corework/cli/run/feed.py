"""Records to calls for the pool, and each call's outcome back to its output line."""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import corework as cw

from .._journal import IndexSet
from .._records import Record, json_line, safe_repr
from .tally import Tally

__all__ = ["Feed", "Row", "error_fields"]

Row = tuple[int, bool, str]  # (index, succeeded, output line)


class Feed:
    """Turns input records into calls for the pool, remembering which record each call
    is, and holding back malformed records (failed without running) only until their
    place in the output comes: at once when no earlier record is still running (or
    order does not matter), so a million malformed lines are never held together."""

    def __init__(self, records: Iterator[Record], done: IndexSet, tally: Tally, *,
                 strict: bool, ordered: bool = True,
                 emit: Callable[[list[Row]], None] | None = None,
                 max_line: int | None = None) -> None:
        self._records = records
        self._done = done
        self._tally = tally
        self._sent: dict[int, tuple[int, int]] = {}  # call number -> (index, line)
        self._malformed: deque[tuple[int, Row]] = deque()
        self._ordered = ordered
        self._emit = emit  # writes rows that are due now (read in the caller's thread)
        self._max_line = max_line  # the longest output line the journal can keep
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
        row = (record.index, False, line)
        due = not self._ordered or (not self._sent and not self._malformed)
        if due and self._emit is not None:
            self._emit([row])
        else:
            self._malformed.append((record.index, row))

    def take(self, number: int) -> tuple[int, int]:
        """The (index, line) of call ``number``, which has finished."""
        return self._sent.pop(number)

    def held(self, before: int | None) -> list[Row]:
        """Malformed records to write now: those before record ``before`` (all: None)."""
        rows = []
        while self._malformed and (before is None or self._malformed[0][0] < before):
            rows.append(self._malformed.popleft()[1])
        return rows

    def row(self, index: int, line: int, outcome: cw.Outcome[Any]) -> Row:
        """The output line of record ``index`` (at input ``line``), counted in the tally."""
        fields: dict[str, Any] = {"index": index}
        error = None
        if outcome.error is None:
            fields["result"] = outcome.value
        else:
            fields["error"] = error = error_fields(outcome.error)
        fields["attempts"] = outcome.attempts
        text = json_line(fields)
        if self._max_line is not None and len(text) > self._max_line:
            fields.pop("result", None)
            fields["error"] = error = {
                "type": "ResultTooBig", "traceback": None,
                "message": f"the record's output line is {len(text):,} characters, more "
                           f"than the journal keeps ({self._max_line:,}): return less"}
            text = json_line(fields)
        self._tally.add(index, line, error)
        return index, error is None, text

    def rows(self, batch: list[cw.Outcome[Any]], *, ordered: bool) -> list[Row]:
        """The output lines of a batch of outcomes, with the malformed records due before
        them (in input order with ``ordered``, else all those held)."""
        rows: list[Row] = []
        for outcome in batch:
            index, line = self.take(outcome.index)
            if ordered:
                rows += self.held(before=index)
            rows.append(self.row(index, line, outcome))
        if not ordered:
            rows += self.held(before=None)
        return rows


def error_fields(exc: BaseException) -> dict[str, Any]:
    """``{"type", "message", "traceback"}`` of a record's error; the traceback is the
    worker's, from the function's own frame on (corework's frames are dropped: a call
    that fails before the function runs, a wrong signature, shows just its exception),
    or None for errors that did not come from the function (a timeout, a crash)."""
    type_name = exc.type_name if isinstance(exc, cw.TaskError) else type(exc).__name__
    cause = exc.__cause__
    try:
        message = str(exc)
    except BaseException:  # a user's __str__ that raises: the record fails all the same
        message = safe_repr(exc)
    if isinstance(cause, cw.RemoteTraceback):
        tb: str | None = cause.tb
    elif exc.__traceback__ is not None or not isinstance(exc, cw.CoreworkError):
        try:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except BaseException:
            tb = None
    else:
        tb = None
    return {"type": type_name, "message": message, "traceback": tb}
