"""``map`` and ``imap``: one call runs a function over an input on a fresh pool."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from . import _progress
from ._auto import Prober, auto_chunks
from ._mapjob import Errors, parse_errors
from ._policy import TaskPolicy
from ._pool import Pool, parse_chunksize, parse_workers
from .engines import resolve_engine_name, start_launcher

__all__ = ["imap", "map"]

T = TypeVar("T")


def map(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str = "auto",
        workers: int | None = None, chunksize: int | Literal["auto"] = "auto",
        ordered: bool = True, timeout: float | None = None, retries: int = 0,
        backoff: float = 0.0, retry_on: Iterable[type[BaseException]] = (),
        errors: Errors = "raise", address: str | None = None,
        progress: bool = False) -> list[Any]:
    """``list(builtins.map(fn, items))``, run on every core.

    ``engine="auto"`` runs every task in a worker process (a task that crashes costs
    that task, never this program) and gives tasks that mostly wait threads there, many
    at once; see the README's "Which engine?". Tiny tasks are batched automatically
    (``chunksize="auto"``).

    ``errors`` says what a failed task does: ``"raise"`` (the first failure in input
    order is raised here, naming the task and item), ``"return"`` (its exception takes
    its place in the list and the map goes on: a task that *returns* an exception object
    looks the same), or ``"outcome"`` (every item as a :class:`corework.Outcome`).
    ``timeout`` (seconds per task), ``retries``, ``backoff`` and ``retry_on`` are as
    for :class:`Pool`; so is ``address``, a Dask scheduler's for ``engine="dask"``.
    ``progress=True`` shows a progress bar: a widget in a Jupyter notebook, a bar on a
    terminal, a status line every few seconds elsewhere (see ``corework._progress``).
    """
    _check(fn, engine, workers, chunksize, errors)
    results: list[Any] = []
    limits = TaskPolicy(timeout, retries, backoff, tuple(retry_on))
    for values in _chunks(fn, items, engine=engine, workers=workers, chunksize=chunksize,
                          ordered=ordered, limits=limits, errors=errors, address=address,
                          progress=progress):
        results.extend(values)  # a chunk at a time: no Python step per result
    return results


def imap(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str = "auto",
         workers: int | None = None, chunksize: int | Literal["auto"] = "auto",
         ordered: bool = True, timeout: float | None = None, retries: int = 0,
         backoff: float = 0.0, retry_on: Iterable[type[BaseException]] = (),
         errors: Errors = "raise", address: str | None = None,
         progress: bool = False) -> Iterator[Any]:
    """Lazily map ``fn`` over ``items``: input is read as results are consumed.

    ``ordered=False`` yields each result as soon as it is done (with ``errors="outcome"``
    each :class:`corework.Outcome` says which item it was). The pool starts at the first
    ``next()`` and lives as long as the iteration; closing the iterator early cancels
    what has not started. The other options are as for :func:`map`.
    """
    _check(fn, engine, workers, chunksize, errors)
    limits = TaskPolicy(timeout, retries, backoff, tuple(retry_on))
    return _imap(fn, items, engine=engine, workers=workers, chunksize=chunksize,
                 ordered=ordered, limits=limits, errors=errors, address=address,
                 progress=progress)


def _imap(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str, workers: int | None,
          chunksize: int | Literal["auto"], ordered: bool, limits: TaskPolicy,
          errors: Errors, address: str | None, progress: bool) -> Iterator[Any]:
    for values in _chunks(fn, items, engine=engine, workers=workers, chunksize=chunksize,
                          ordered=ordered, limits=limits, errors=errors, address=address,
                          progress=progress):
        yield from values


def _chunks(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str,
            workers: int | None, chunksize: int | Literal["auto"], ordered: bool,
            limits: TaskPolicy, errors: Errors, address: str | None,
            progress: bool) -> Iterator[list[Any]]:
    """Results a chunk at a time, on ``engine``, shown on a progress display if asked."""
    chunks = _run_chunks(fn, items, engine=engine, workers=workers, chunksize=chunksize,
                         ordered=ordered, limits=limits, errors=errors, address=address)
    if not progress:
        yield from chunks
        return
    if engine in ("auto", "process"):
        start_launcher()  # before the display's thread: the launcher is then forked
    total = _progress.length(items)
    yield from _progress.observe(chunks, total)


def _run_chunks(fn: Callable[[Any], T], items: Iterable[Any], *, engine: str,
                workers: int | None, chunksize: int | Literal["auto"], ordered: bool,
                limits: TaskPolicy, errors: Errors, address: str | None
                ) -> Iterator[list[Any]]:
    """Results a chunk at a time, on ``engine``; "auto" sizes the pool (see ``_auto``)."""

    def run(pool: Pool, source: Iterable[Any]) -> Iterator[list[Any]]:
        return pool._map_chunks(fn, source, chunksize=chunksize, ordered=ordered,
                                errors=errors)

    def open_pool(count: int | None, *, engine: str, threads: int | None = None,
                  prober: Prober | None = None) -> contextlib.AbstractContextManager[Pool]:
        return _own_pool(count, engine, limits, address, threads=threads, prober=prober)

    if engine != "auto" or address is not None:
        with open_pool(workers, engine=engine) as pool:
            yield from run(pool, items)
        return
    yield from auto_chunks(fn, items, workers=workers, open_pool=open_pool, run=run)


def _check(fn: object, engine: str, workers: int | None,
           chunksize: int | Literal["auto"], errors: str) -> None:
    """Refuse bad arguments at the call, not at the first result."""
    if not callable(fn):
        raise TypeError(f"the task function must be callable, not {type(fn).__name__}")
    resolve_engine_name(engine)
    parse_workers(workers)
    parse_chunksize(chunksize)
    parse_errors(errors)


@contextlib.contextmanager
def _own_pool(workers: int | None, engine: str, limits: TaskPolicy,
              address: str | None = None, *, threads: int | None = None,
              prober: Prober | None = None) -> Iterator[Pool]:
    """A pool for one call. Left early (an error, Ctrl-C, a closed iterator), it stops at
    once rather than finish tasks whose results nobody will read."""
    pool = Pool(workers, engine=engine, timeout=limits.timeout, retries=limits.retries,
                backoff=limits.backoff, retry_on=limits.retry_on, address=address,
                threads=threads, _prober=prober)
    try:
        yield pool
    except BaseException:
        pool.kill()
        raise
    pool.shutdown(wait=True)
