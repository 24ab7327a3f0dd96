"""What a run of ``corework run`` did: the counts for its summary and its exit code."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SHOWN_ERRORS", "Tally"]

SHOWN_ERRORS = 5  # failed records named in the summary


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

    @property
    def exit_code(self) -> int:
        """0 when every record succeeded, 1 when some failed (now or before)."""
        return 1 if self.failed or self.skipped_failed else 0

    def print_summary(self, seconds: float) -> None:
        """The summary on stderr: the counts, then the first few errors."""
        skipped = f", {self.skipped:,} skipped (in the journal already)" if self.skipped else ""
        print(f"corework run: {self.succeeded:,} succeeded, {self.failed:,} failed{skipped} "
              f"in {seconds:.1f} s", file=sys.stderr)
        if self.skipped_failed:
            print(f"  {self.skipped_failed:,} of the skipped records had failed; "
                  f"--retry-failed runs them again", file=sys.stderr)
        for error in self.errors:
            print(f"  {error}", file=sys.stderr)
        if self.failed > len(self.errors):
            print(f"  ... and {self.failed - len(self.errors):,} more (see the output)",
                  file=sys.stderr)
