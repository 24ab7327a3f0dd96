"""Whether this thread is handing outcomes on to user code — settling futures (their
done-callbacks run), or passing a worker's log records to the caller's handlers: code
there that shuts the pool down with ``wait=True`` must not wait for this very thread.
Every thread of corework that does either marks it (engines, the scheduler's timer)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["handing_on", "is_handing_on"]

_local = threading.local()  # .depth: how many outcomes this thread is handing on


@contextlib.contextmanager
def handing_on() -> Iterator[None]:
    """Mark this thread as handing outcomes on (so a done-callback's shutdown won't wait)."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def is_handing_on() -> bool:
    """Whether this thread is inside :func:`handing_on` (an engine's, or the timer's)."""
    return getattr(_local, "depth", 0) > 0
