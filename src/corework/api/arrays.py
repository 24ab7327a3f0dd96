"""``cw.empty`` and ``cw.zeros``: numpy arrays born in shared memory, sent to tasks as is.

:func:`corework.share` copies an array into shared memory; an array made here is there
from the start, so nothing is ever copied: the caller fills it in place, and tasks on the
process engine get a reference to it (the segment's id and where the array lies in it),
map it once per worker and read it — or, with ``writable=True``, write it — in place.
Being a share, it is never compared either: it is not a copy of anything.

numpy is imported when one of these is called, never before.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, SupportsIndex

from ..transport import segments as _segments

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import DTypeLike

__all__ = ["empty", "zeros"]

Shape = SupportsIndex | Sequence[SupportsIndex]


def empty(shape: Shape, dtype: DTypeLike = float, *, writable: bool = False,
          order: str = "C") -> np.ndarray[Any, Any]:
    """A new numpy array in shared memory, like ``numpy.empty(shape, dtype)``.

    It lives in an anonymous memory file (``memfd``) from the start: fill it in place
    (``a[:] = ...``, ``np.copyto(a, ...)``, ``out=a``), then pass it — or views of it — to
    any number of tasks: on the process engine each worker maps it once and reads it
    where it is, with no copy per task, per worker or per map. There tasks get it
    read-only unless ``writable=True``; then their writes land in the caller's array
    (give each task its own slice). The thread engine hands tasks the array itself, the
    caller's, writable; Dask workers get it read-only, scattered once (``writable=True``
    is refused there: tasks elsewhere would write into copies). Tasks read the array as it
    is when they read it: do not write it while tasks that read it run.

    The caller's array is always writable, stays valid after the pools that used it end,
    and its memory is freed once it and its views are gone (and the tasks using it end).
    A memory file reads as zeros where it was never written, so the array starts at zero
    (``empty`` and :func:`zeros` differ in name only), and its pages are only allocated
    as they are first written. ``order`` is ``"C"`` or ``"F"``. Arrays of Python objects
    cannot live in shared memory (their items are pointers into this process).
    """
    import numpy as np

    kind = np.dtype(dtype)
    if kind.hasobject:
        raise TypeError(f"cw.empty() cannot put an array of {kind} in shared memory: its "
                        "items are Python objects that live in this process. Use a "
                        "numeric, bool, bytes or structured dtype without objects.")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    dims = _dims(shape)
    nbytes = math.prod(dims) * kind.itemsize
    if nbytes == 0:  # nothing to share (a memory file cannot be mapped empty)
        return np.empty(dims, kind, order=order)  # type: ignore[call-overload,no-any-return]
    mapping = _segments.blank_share(nbytes, writable)
    flat = np.frombuffer(mapping, dtype=kind, count=math.prod(dims))
    return flat.reshape(dims, order=order)  # type: ignore[call-overload,no-any-return]


def zeros(shape: Shape, dtype: DTypeLike = float, *, writable: bool = False,
          order: str = "C") -> np.ndarray[Any, Any]:
    """A new numpy array of zeros in shared memory, like ``numpy.zeros(shape, dtype)``.

    Everything :func:`empty` says holds: this is the same array (a memory file starts as
    zeros, with no page allocated until it is written); the name says what you rely on.
    """
    return empty(shape, dtype, writable=writable, order=order)


def _dims(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, Sequence):
        dims = tuple(operator.index(d) for d in shape)
    else:
        dims = (operator.index(shape),)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimensions are not allowed: {dims}")
    return dims
