"""Argument types and choices shared by the subcommands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["FORMATS", "positive"]

#: The input formats of ``corework run`` and ``advise`` (read by ``_records``).
FORMATS = ("jsonl", "csv", "text")


def positive(kind: Callable[[str], Any], *, zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` above 0 (or at least 0, with
    ``zero``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            wanted = "a non-negative" if zero else "a positive"
            raise argparse.ArgumentTypeError(f"expected {wanted} number, got {text!r}")
        return value
    return parse
