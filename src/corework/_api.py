"""``map`` and ``imap``: one call runs a function over an input on a fresh pool."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from ._policy import TaskPolicy
from ._pool import Pool, parse_chunksize, parse_workers
from .engines import resolve_engine_name

__all__ = ["imap", "map"]

T = TypeVar("T")


def map(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str = "auto",
        workers: int | None = None, chunksize: int | Literal["auto"] = "auto",
        ordered: bool = True, timeout: float | None = None, retries: int = 0,
        backoff: float = 0.0, retry_on: Iterable[type[BaseException]] = (),
        address: str | None = None) -> list[T]:
    """``list(builtins.map(fn, items))``, run on every core.

    Tiny tasks are batched automatically (``chunksize="auto"``); the first task that
    raises stops the map and its exception is raised here, naming the task and item.
    ``timeout`` (seconds per task), ``retries``, ``backoff`` and ``retry_on`` are as
    for :class:`Pool`; so is ``address``, a Dask scheduler's for ``engine="dask"``.
    """
    _check(fn, engine, workers, chunksize)
    results: list[T] = []
    limits = TaskPolicy(timeout, retries, backoff, tuple(retry_on))
    with _own_pool(workers, engine, limits, address) as pool:
        for values in pool._map_chunks(fn, items, chunksize=chunksize, ordered=ordered):
            results.extend(values)  # a chunk at a time: no Python step per result
    return results


def imap(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str = "auto",
         workers: int | None = None, chunksize: int | Literal["auto"] = "auto",
         ordered: bool = True, timeout: float | None = None, retries: int = 0,
         backoff: float = 0.0, retry_on: Iterable[type[BaseException]] = (),
         address: str | None = None) -> Iterator[T]:
    """Lazily map ``fn`` over ``items``: input is read as results are consumed.

    ``ordered=False`` yields each result as soon as it is done. The pool starts at the
    first ``next()`` and lives as long as the iteration; closing the iterator early
    cancels what has not started. The other options are as for :func:`map`.
    """
    _check(fn, engine, workers, chunksize)
    limits = TaskPolicy(timeout, retries, backoff, tuple(retry_on))
    return _imap(fn, items, engine=engine, workers=workers, chunksize=chunksize,
                 ordered=ordered, limits=limits, address=address)


def _imap(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str, workers: int | None,
          chunksize: int | Literal["auto"], ordered: bool, limits: TaskPolicy,
          address: str | None) -> Iterator[T]:
    with _own_pool(workers, engine, limits, address) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize, ordered=ordered)


def _check(fn: object, engine: str, workers: int | None,
           chunksize: int | Literal["auto"]) -> None:
    """Refuse bad arguments at the call, not at the first result."""
    if not callable(fn):
        raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
    resolve_engine_name(engine)
    parse_workers(workers)
    parse_chunksize(chunksize)


@contextlib.contextmanager
def _own_pool(workers: int | None, engine: str, limits: TaskPolicy,
              address: str | None = None) -> Iterator[Pool]:
    """A pool for one call. Left early (an error, Ctrl-C, a closed iterator), it stops at
    once rather than finish tasks whose results nobody will read."""
    pool = Pool(workers, engine=engine, timeout=limits.timeout, retries=limits.retries,
                backoff=limits.backoff, retry_on=limits.retry_on, address=address)
    try:
        yield pool
    except BaseException:
        pool.kill()
        raise
    pool.shutdown(wait=True)
