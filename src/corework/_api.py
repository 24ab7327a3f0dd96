"""``map`` and ``imap``: one call runs a function over an input on a fresh pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from ._pool import Pool, parse_chunksize, parse_workers
from .engines import resolve_engine_name

__all__ = ["imap", "map"]

T = TypeVar("T")


def map(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str = "auto",
        workers: int | None = None, chunksize: int | Literal["auto"] = "auto",
        ordered: bool = True) -> list[T]:
    """``list(builtins.map(fn, items))``, run on every core.

    Tiny tasks are batched automatically (``chunksize="auto"``); the first task that
    raises stops the map and its exception is raised here, naming the task and item.
    """
    return list(imap(fn, items, engine=engine, workers=workers, chunksize=chunksize,
                     ordered=ordered))


def imap(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str = "auto",
         workers: int | None = None, chunksize: int | Literal["auto"] = "auto",
         ordered: bool = True) -> Iterator[T]:
    """Lazily map ``fn`` over ``items``: input is read as results are consumed.

    ``ordered=False`` yields each result as soon as it is done. The pool lives as long as
    the iteration; closing the iterator early cancels what has not started.
    """
    parse_chunksize(chunksize)  # fail now, not at the first next()
    parse_workers(workers)
    resolve_engine_name(engine)
    if not callable(fn):
        raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
    return _iterate(lambda: Pool(workers, engine=engine), fn, items, chunksize, ordered)


def _iterate(make_pool: Callable[[], Pool], fn: Callable[[Any], T], items: Iterable[Any],
             chunksize: int | Literal["auto"], ordered: bool) -> Iterator[T]:
    """The pool starts at the first ``next()`` and ends with the iteration. Abandoned
    early (an error, Ctrl-C, ``close()``), it stops at once rather than finish tasks
    whose results nobody will read."""
    pool = make_pool()
    try:
        yield from pool.imap(fn, items, chunksize=chunksize, ordered=ordered)
    except BaseException:
        pool.kill()
        raise
    pool.shutdown(wait=True)
