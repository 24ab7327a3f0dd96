"""The files of ``corework run``: the input's digest and line count, and the output."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from .._records import write_lines
from .checks import UsageError

__all__ = ["Output", "OutputError", "check_output", "output", "scan"]

_SCAN_BLOCK = 1 << 20


def scan(path: str) -> tuple[str | None, int | None]:
    """One pass over the input file: a digest of every byte, and its line count.

    The whole file is hashed, not its size and mtime (a copy changes the mtime, an edit
    can keep the size) nor its ends (an edit in the middle would go unseen): a resumed
    run must read exactly the records the journal's indices refer to. It costs one
    sequential read, about a second per GB. Standard input is not scanned (see
    :func:`corework.cli.run.checks.input_format`).
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


class OutputError(Exception):
    """The output cannot be written mid-run (a full disk, a closed pipe): one line, exit
    code 1."""


class Output:
    """The output stream; a failed write (``ENOSPC``: a full disk, ``/dev/full``) raises
    :class:`OutputError`, naming the output, instead of a traceback. Opened on the first
    write when ``opener`` is given (a journaled run writes only at its end)."""

    def __init__(self, stream: IO[str] | None, path: str,
                 opener: Callable[[], IO[str]] | None = None) -> None:
        self._stream = stream
        self._opener = opener
        self.path = path

    @property
    def stream(self) -> IO[str]:
        if self._stream is None:
            assert self._opener is not None
            self._stream = self._opener()
        return self._stream

    @property
    def opened(self) -> IO[str] | None:
        return self._stream

    def write_lines(self, lines: Iterable[str], *, flush: bool = False) -> None:
        try:
            write_lines(lines, self.stream)
            if flush:
                self.stream.flush()
        except OSError as exc:
            raise self.error(exc) from None

    def error(self, exc: OSError) -> OutputError:
        shown = "to standard output" if self.path == "-" else f"the output {self.path!r}"
        return OutputError(f"cannot write {shown}: {exc.strerror or exc}")


def check_output(path: str) -> None:
    """Usage errors of ``--output``, found before anything runs."""
    if path == "-":
        return
    if os.path.isdir(path):
        raise UsageError(f"the output {path!r} is a directory")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write the output {path!r}: no such directory {parent!r}")


@contextlib.contextmanager
def output(path: str, streaming: bool) -> Iterator[Output]:
    """Where output lines go. Without a journal they stream to ``path`` as they come;
    with one they are written at the end into a new temporary file beside ``path``
    (created exclusively, so no file or link planted there is followed, and only then:
    a run killed before its end leaves none), renamed over ``path`` once whole. A device
    or a pipe, such as ``/dev/stdout``, is written in place: it cannot be renamed over.
    New files get the permissions the umask allows, as ``open`` gives them."""
    if path == "-":
        out = Output(sys.stdout, path)
        yield out
        out.write_lines((), flush=True)
        return
    special = os.path.exists(path) and not os.path.isfile(path)
    if streaming or special:
        try:
            stream = open(path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot write the output {path!r}: {exc.strerror}") from None
        with _closing(stream, path):
            yield Output(stream, path)
        return
    temporary: list[str] = []
    out = Output(None, path, lambda: _beside(path, temporary))
    try:
        yield out
        out.write_lines(())  # an empty output is a file too
        with _closing(out.stream, path):
            pass
        os.replace(temporary[0], path)
    except BaseException:
        if out.opened is not None:
            with contextlib.suppress(OSError):
                out.opened.close()
        for name in temporary:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise


def _beside(path: str, made: list[str]) -> IO[str]:
    """A new file in ``path``'s directory (``O_EXCL``: never an existing file or link),
    its name appended to ``made``; mode 0666 less the umask."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.",
                                         suffix=".corework-partial")
    except OSError as exc:
        raise OutputError(f"cannot write the output {path!r}: {exc.strerror}") from None
    made.append(temporary)
    os.chmod(temporary, 0o666 & ~_umask())
    return os.fdopen(fd, "w", encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0o077)  # read by setting it: this thread alone creates files now
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _closing(stream: IO[str], path: str) -> Iterator[None]:
    """Close ``stream`` at the end; its last buffered write failing is an OutputError."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            stream.close()
        raise
    try:
        stream.close()
    except OSError as exc:
        raise Output(stream, path).error(exc) from None
