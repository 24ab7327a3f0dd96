"""A task in a module that imports scikit-learn, as a user's own module would: a worker
that runs it has scikit-learn imported, by itself or before (see benchmarks/warm.py)."""

from __future__ import annotations

import sklearn.ensemble  # noqa: F401 - the import is the point


def echo(x: int) -> int:
    return x
