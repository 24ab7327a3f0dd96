"""Reading ``corework run``'s input records and writing its output lines, streaming.

Input formats (chosen by ``--format`` or the file's extension; standard input is JSON
lines unless told otherwise):

* ``jsonl`` (``.jsonl``, ``.ndjson``): one JSON value per line; whitespace-only lines are
  skipped. A value is the function's single argument, except an object whose only keys
  are ``args`` (a list) and/or ``kwargs`` (an object): that one is spread,
  ``fn(*args, **kwargs)``. (To pass such an object as the value, wrap it:
  ``{"args": [{"args": [1]}]}``.)
* ``csv`` (``.csv``): a header line, then one record per row: a dict of strings, or with
  ``--typed`` a field that reads as a JSON number, ``true``, ``false`` or ``null`` becomes
  that value.
* ``text`` (``.txt``, ``.text``, ``.lines``): each line, without its line break, is a
  string argument.

Each record is read as a :class:`Record`: its index (0, 1, ... in input order), the line
it starts on, and the call to make — or, for a line that cannot be read, the reason: no
line can stop a run (one nested too deeply, numbers too long, a line over ``max_bytes``,
which is read past without being held). Nothing is read ahead: a ten-million-line input is
one line in memory at a time.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._args import FORMATS

__all__ = ["FORMATS", "Record", "format_for", "json_line", "open_input", "read_records",
           "safe_repr", "write_lines"]

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "text",
               ".text": "text", ".lines": "text"}

Call = tuple[tuple[Any, ...], dict[str, Any]]
#: What reading one record may raise besides ValueError (a JSON value nested too deeply,
#: a line too big for memory): that record fails, never the run.
_RECORD_ERRORS = (ValueError, RecursionError, MemoryError)
_SKIP_BLOCK = 1 << 20


@dataclass(frozen=True)
class Record:
    """One input record: the call to make, or why its line could not be read."""

    index: int
    line: int  # 1-based line number where the record starts
    call: Call | None = None
    problem: str | None = None  # set for a malformed record (then ``call`` is None)


def format_for(path: str, chosen: str | None) -> str:
    """The input format: ``chosen``, else by extension (standard input: ``jsonl``)."""
    if chosen is not None:
        return chosen
    if path == "-":
        return "jsonl"
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; "
                         f"say --format {'|'.join(FORMATS)}")
    return found


def read_records(stream: IO[bytes], fmt: str, *, typed: bool = False,
                 max_bytes: int | None = None) -> Iterator[Record]:
    """Every record of ``stream`` (binary), lazily, in order; a line longer than
    ``max_bytes`` is a failed record."""
    lines = _bounded_lines(stream, max_bytes)
    if fmt == "csv":
        return _csv_records(lines, typed)
    return _line_records(lines, _jsonl_call if fmt == "jsonl" else _text_call)


class _TooLong(bytes):
    """A line over the limit, read past: its length in ``size``, its bytes dropped."""

    size = 0
    limit = 0


def _bounded_lines(stream: IO[bytes], limit: int | None) -> Iterator[bytes]:
    """The lines of ``stream``; one longer than ``limit`` comes as a :class:`_TooLong`."""
    if limit is None:
        yield from stream
        return
    while raw := stream.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        size = len(raw)
        while raw and not raw.endswith(b"\n"):
            raw = stream.readline(_SKIP_BLOCK)
            size += len(raw)
        too_long = _TooLong()
        too_long.size, too_long.limit = size, limit
        yield too_long


def _too_long(raw: bytes) -> str | None:
    if not isinstance(raw, _TooLong):
        return None
    return (f"{raw.size:,} bytes, over --max-record-bytes ({raw.limit:,}): not read "
            "(split the record, or give a larger --max-record-bytes)")


def _line_records(lines: Iterator[bytes], parse: Any) -> Iterator[Record]:
    index = 0
    for number, raw in enumerate(lines, start=1):
        problem = _too_long(raw)
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            problem = f"not UTF-8 ({exc.reason} at byte {exc.start})"
        if problem is None and parse is _jsonl_call and not text.strip():
            continue
        if problem is None:
            try:
                yield Record(index, number, call=parse(text))
            except _RECORD_ERRORS as exc:
                problem = _reason(exc)
        if problem is not None:
            yield Record(index, number, problem=f"line {number}: {problem}")
        index += 1


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to read (RecursionError)"
    if isinstance(exc, MemoryError):
        return "too big to read into memory (MemoryError)"
    return str(exc)


def _text_call(text: str) -> Call:
    return (text,), {}


def _jsonl_call(text: str) -> Call:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(value, dict) and value and value.keys() <= {"args", "kwargs"}:
        args, kwargs = value.get("args", []), value.get("kwargs", {})
        if not isinstance(args, list):
            raise ValueError(f"'args' must be a list, not {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise ValueError(f"'kwargs' must be an object, not {type(kwargs).__name__}")
        return tuple(args), kwargs
    return (value,), {}


class _Lines:
    """Decoded lines for the csv module, remembering which ones were not UTF-8."""

    def __init__(self, stream: Iterator[bytes]) -> None:
        self._stream = stream
        self.bad: dict[int, str] = {}  # line number -> reason
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self._stream:
            self.number += 1
            too_long = _too_long(raw)
            if too_long is not None:
                self.bad[self.number] = too_long
                yield "\n"
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.bad[self.number] = f"not UTF-8 ({exc.reason} at byte {exc.start})"
                yield raw.decode("utf-8", errors="replace")


def _csv_records(stream: Iterator[bytes], typed: bool) -> Iterator[Record]:
    lines = _Lines(stream)
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    index = 0
    while True:
        start = lines.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, *_RECORD_ERRORS) as exc:
            yield Record(index, start, problem=f"line {start}: bad CSV: {_reason(exc)}")
            index += 1
            continue
        problem = _csv_problem(lines, start, row, header)
        if header is None and problem is None:
            header = row
            continue
        if not row and problem is None:
            continue  # a blank line
        if problem is not None:
            yield Record(index, start, problem=problem)
        else:
            assert header is not None
            yield Record(index, start, call=((_csv_value(header, row, typed),), {}))
        index += 1


def _csv_problem(lines: _Lines, start: int, row: list[str],
                 header: list[str] | None) -> str | None:
    bad = [n for n in range(start, lines.number + 1) if n in lines.bad]
    if bad:
        reason = lines.bad[bad[0]]
        for n in bad:
            del lines.bad[n]
        return f"line {bad[0]}: {reason}"
    if header is not None and row and len(row) != len(header):
        return (f"line {start}: expected {len(header)} fields (as in the header), "
                f"found {len(row)}")
    return None


def _csv_value(header: list[str], row: list[str], typed: bool) -> dict[str, Any]:
    if not typed:
        return dict(zip(header, row, strict=True))
    return {key: _typed(field) for key, field in zip(header, row, strict=True)}


def _typed(field: str) -> Any:
    looks_typed = field in ("true", "false", "null") or (field and field[0] in "-0123456789")
    if looks_typed:
        try:
            return json.loads(field)
        except _RECORD_ERRORS:  # not JSON after all, or a number too long: the text
            pass
    return field


def json_line(fields: dict[str, Any]) -> str:
    """One output line (no line break). A result JSON cannot hold is written as its
    ``repr``, with ``"repr": true`` beside it, so no record is lost for its result.
    Non-ASCII text is escaped, so even a lone surrogate from the input writes as valid
    UTF-8."""
    try:
        return json.dumps(fields, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        shown = dict(fields, result=safe_repr(fields.get("result")), repr=True)
        return json.dumps(shown, default=safe_repr)


def safe_repr(value: Any) -> str:
    """``repr(value)``, or what it is when even that fails (an int of more digits than
    Python converts, a ``__repr__`` that raises): never an exception."""
    try:
        return repr(value)
    except ValueError as exc:
        if isinstance(value, int):  # past sys.get_int_max_str_digits(): hex has no limit
            return f"{value:#x}"
        return f"<{type(value).__name__} object: repr() failed: {exc}>"
    except BaseException as exc:  # whatever a user's __repr__ raises
        return f"<{type(value).__name__} object: repr() failed: {type(exc).__name__}>"


def write_lines(lines: Iterable[str], out: IO[str]) -> None:
    """Write each line with its line break."""
    for line in lines:
        out.write(line)
        out.write("\n")


def open_input(path: str) -> IO[bytes]:
    """The input, binary; ``-`` is standard input."""
    return sys.stdin.buffer if path == "-" else open(path, "rb")
