"""A chunk's arguments for a Dask cluster: pickled, with large buffers scattered.

Buffers of ``SCATTER_BYTES`` or more go to the workers straight from the caller (not in
the task graph, which goes through the scheduler); a ``cw.share`` is scattered once per
pool to every worker, cached by share id, and dropped when the caller lets go of it."""

from __future__ import annotations

import pickle
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..._errors import SerializationError
from ...transport import segments as _segments
from ...transport.picklers import dumps_by_value
from .cluster import Cluster
from .worker import _Args

#: Buffers at least this big are scattered to the workers rather than put in the task
#: graph (which goes through the scheduler). Smaller ones are cheaper inline than one
#: more round trip.
SCATTER_BYTES = 1 << 20


class Scatter:
    """Packs chunks for one engine's client, and keeps its scattered shares."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()
        self._shares: dict[str, Any] = {}  # share id -> the share scattered (a future)
        self._released: deque[str] = deque()  # shares the caller let go of (from the GC)

    def drop(self) -> list[Any]:
        """Forget every scattered share; the caller releases them before the client."""
        with self._lock:
            shares = list(self._shares.values())
            self._shares.clear()
        return shares

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        """Pickle the items; their large buffers and shares are scattered, not inlined."""
        found: list[tuple[memoryview, tuple[_segments.Share, Any, int] | None]] = []

        def collect(buffer: pickle.PickleBuffer) -> bool:
            try:
                raw = buffer.raw()
            except BufferError:  # not contiguous: pickle copies it inline
                return True
            share = None
            if raw.nbytes and _segments.have_shares():
                share = _segments.find(_segments.address_of(raw), raw.nbytes)
            if share is None and raw.nbytes < SCATTER_BYTES:
                return True
            found.append((raw, share))
            return False

        try:
            data = dumps_by_value(list(items), collect)
        except Exception as exc:
            position = next((at for at, item in enumerate(items) if not _picklable(item)), None)
            where = describe(position) if position is not None else "a task"
            raise SerializationError(
                f"cannot send the arguments of {where} to a Dask worker: {exc}. Pass "
                "picklable arguments (or create the object inside the task), or use "
                "engine='thread'.", stage="pickle-argument", original=exc) from exc
        return _Args(data, self._place(found, describe))

    def _place(self, found: list[tuple[memoryview, tuple[_segments.Share, Any, int] | None]],
               describe: Callable[[int], str]) -> tuple[tuple[Any, int, int, bool], ...]:
        """Where each out-of-band buffer is on the cluster: a share (scattered once to
        every worker) or a large buffer of this chunk's own (scattered now)."""
        if not found:
            return ()
        self._forget_released()
        own = [raw for raw, share in found if share is None]
        scattered = iter(self._cluster.client.scatter(own, hash=False) if own else [])
        refs = []
        for raw, share in found:
            if share is None:
                refs.append((next(scattered), 0, raw.nbytes, False))
                continue
            record, mapping, offset = share
            if record.writable:
                raise SerializationError(
                    f"a writable cw.share() cannot be written by tasks on a Dask cluster "
                    f"(each worker has its own copy, so the caller would not see the "
                    f"writes), as {describe(0)} would: return the values from the tasks "
                    "instead, or use engine='process' or 'thread'", stage="pickle-argument")
            refs.append((self._scattered_share(record, mapping), offset, raw.nbytes, True))
        return tuple(refs)

    def _scattered_share(self, share: _segments.Share, mapping: Any) -> Any:
        with self._lock:
            future = self._shares.get(share.id)
        if future is None:
            future = self._cluster.client.scatter(memoryview(mapping), broadcast=True, hash=False)
            with self._lock:
                future = self._shares.setdefault(share.id, future)
        return future

    def released(self, share_id: str) -> None:
        """A share died in the caller (called by the garbage collector: no locks here)."""
        self._released.append(share_id)

    def _forget_released(self) -> None:
        """Drop the cluster's copies of the shares the caller let go of."""
        with self._lock:
            while self._released:
                self._shares.pop(self._released.popleft(), None)


def _picklable(item: Any) -> bool:
    try:
        dumps_by_value(item)
    except Exception:
        return False
    return True
