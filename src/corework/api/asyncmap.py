"""``aimap``: ``async for result in cw.aimap(fn, items)``, without blocking the event loop.

Results reach the loop as the scheduler's threads finish them (see
``scheduling/amapjob.py``). Leaving the iteration before its end (``break``, ``aclose()``,
a cancelled task, a failure raised with ``errors="raise"``) drops the work not yet
started; the tasks running then are killed with ``kill_on_cancel=True``, otherwise they
finish unseen (their results are dropped).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..scheduling.amapjob import async_chunks
from . import progress as _progress
from .auto import auto_chunks
from .keywords import MapKeywords, signed
from .options import MapOptions, PoolOptions
from .pool import pool_of

if sys.version_info >= (3, 11):  # at run time too: typing.get_type_hints() resolves them
    from typing import Unpack
elif TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["aimap"]


@signed(MapKeywords)
def aimap(fn: Callable[[Any], Any], items: Iterable[Any], *, kill_on_cancel: bool = False,
          **options: Unpack[MapKeywords]) -> AsyncGenerator[Any, None]:
    """:func:`corework.imap` for asyncio: ``async for result in cw.aimap(fn, items)``.

    The options are as for :func:`corework.imap` (checked here, at the call); the pool
    starts at the first ``__anext__`` and is shut down when the iteration ends (the
    loop is not blocked meanwhile). Leaving early cancels what has not started, and with
    ``kill_on_cancel=True`` kills the tasks that run.
    """
    return _aimap(fn, items, MapOptions.parse("aimap", fn, options), kill_on_cancel)


async def _aimap(fn: Callable[[Any], Any], items: Iterable[Any], options: MapOptions,
                 kill_on_cancel: bool) -> AsyncGenerator[Any, None]:
    items, pool_options = _sized(fn, items, options)
    pool = pool_of(pool_options)
    display = _progress.progress(_progress.length(items)) if options.progress else None
    chunks = async_chunks(pool._scheduler, fn, items, policy=pool._policy, ordered=options.ordered,
                     chunksize=options.chunksize, errors=options.errors,
                     kill_on_cancel=kill_on_cancel)
    finished = False
    try:
        async for values in chunks:
            if display is not None:
                display.advance(len(values), 0)
            for value in values:
                yield value
        finished = True
    finally:
        await chunks.aclose()  # an ``async for`` left early does not close it
        if display is not None:
            display.close()
        if finished:  # the workers' exit, awaited in a thread of the loop's executor
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        elif kill_on_cancel:
            pool.kill()
        else:
            pool.shutdown(wait=False, cancel_futures=True)


def _sized(fn: Callable[[Any], Any], items: Iterable[Any], options: MapOptions
           ) -> tuple[Iterable[Any], PoolOptions]:
    """The items and the options of the pool to map them on: ``engine="auto"``'s as
    ``cw.imap`` sizes it (``api/auto.py``), else the options as given."""
    if not options.auto:
        return items, options.pool
    chosen: list[tuple[Iterable[Any], PoolOptions]] = []

    def choose(fn_: Callable[[Any], Any], items_: Iterable[Any], options_: MapOptions,
               pool_options: PoolOptions) -> Iterator[list[Any]]:
        chosen.append((items_, pool_options))
        return iter(())

    for _ in auto_chunks(fn, items, options, run=choose):
        pass
    return chosen[0]
