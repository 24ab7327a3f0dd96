"""``map`` and ``imap``: one call runs a function over an input on a fresh pool."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..engines import spec_of
from . import progress as _progress
from .auto import auto_chunks
from .keywords import MapKeywords, signed
from .options import MapOptions, PoolOptions
from .pool import pool_of

if sys.version_info >= (3, 11):  # at run time too: typing.get_type_hints() resolves them
    from typing import Unpack
elif TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["imap", "map"]

T = TypeVar("T")


@signed(MapKeywords)
def map(fn: Callable[[Any], T], items: Iterable[Any], **options: Unpack[MapKeywords]
        ) -> list[Any]:
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
    terminal (rich if installed, else tqdm), a status line every few seconds elsewhere;
    or pass your own tqdm bar or rich ``Progress``, or a callable that receives
    ``(done, total, failed)`` after each batch of results (see ``corework.api.progress``).
    """
    parsed = MapOptions.parse("map", fn, options)
    results: list[Any] = []
    for values in _chunks(fn, items, parsed):
        results.extend(values)  # a chunk at a time: no Python step per result
    return results


@signed(MapKeywords)
def imap(fn: Callable[[Any], T], items: Iterable[Any], **options: Unpack[MapKeywords]
         ) -> Iterator[Any]:
    """Lazily map ``fn`` over ``items``: input is read as results are consumed.

    ``ordered=False`` yields each result as soon as it is done (with ``errors="outcome"``
    each :class:`corework.Outcome` says which item it was). The pool starts at the first
    ``next()`` and lives as long as the iteration; closing the iterator early cancels
    what has not started. The other options are as for :func:`map`.
    """
    return _imap(fn, items, MapOptions.parse("imap", fn, options))


def _imap(fn: Callable[[Any], T], items: Iterable[Any], options: MapOptions
          ) -> Iterator[Any]:
    for values in _chunks(fn, items, options):
        yield from values


def _chunks(fn: Callable[[Any], T], items: Iterable[Any], options: MapOptions
            ) -> Iterator[list[Any]]:
    """Results a chunk at a time, shown on a progress display if asked; on ``engine="auto"``
    the pool is sized by ``api/auto.py``."""
    if options.auto:
        chunks = auto_chunks(fn, items, options, run=_run)
    else:
        chunks = _run(fn, items, options, options.pool)
    if options.progress is None:
        yield from chunks
        return
    ready = spec_of(options.pool.engine).before_threads
    if ready is not None:
        ready()  # before the display's thread (the process engine's launcher is forked)
    yield from _progress.observe(chunks, _progress.length(items), options.progress,
                                 options.errors)


def _run(fn: Callable[[Any], T], items: Iterable[Any], options: MapOptions,
         pool_options: PoolOptions) -> Iterator[list[Any]]:
    """Map ``fn`` on a pool of its own, a chunk's results at a time. Left early (an
    error, Ctrl-C, a closed iterator), the pool stops at once rather than finish tasks
    whose results nobody will read."""
    pool = pool_of(pool_options)
    try:
        yield from pool._map_chunks(fn, items, chunksize=options.chunksize,
                                    ordered=options.ordered, errors=options.errors)
    except BaseException:
        pool.kill()
        raise
    pool.shutdown(wait=True)
