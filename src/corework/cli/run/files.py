"""The files of ``corework run``: the input's digest and line count, and the output."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from typing import IO

from .checks import UsageError

__all__ = ["output", "scan"]

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


@contextlib.contextmanager
def output(path: str, streaming: bool) -> Iterator[IO[str]]:
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
