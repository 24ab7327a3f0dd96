"""Argument types and choices shared by the subcommands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["FORMATS", "parse_size", "positive"]

#: The input formats of ``corework run`` and ``advise`` (read by ``_records``).
FORMATS = ("jsonl", "csv", "text")


def positive(kind: Callable[[str], Any], *, zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` above 0 (or at least 0, with
    ``zero``)."""
    wanted = ("a non-negative" if zero else "a positive") + \
        (" whole number" if kind is int else " number")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number: expected {wanted}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


def parse_size(text: str) -> int:
    """An argparse type: a size in bytes, as ``256MiB``, ``1GB`` or plain ``1048576``."""
    import corework as cw

    try:
        size = cw.parse_memory(text)
    except ValueError:
        size = None
    if size is None or size <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: expected bytes, or a number with KiB, MiB, GiB, "
            "KB, MB or GB, e.g. 256MiB")
    return size
