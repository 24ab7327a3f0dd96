"""Logging from process workers, handled by the caller's handlers as if logged there.

In the worker, :func:`install` puts one :class:`RelayHandler` on the root logger (and
takes away the handlers a forked worker inherited, so nothing is written twice). Each
record a task logs is sent on the worker's channel *as it is emitted*, synchronously,
under the worker's send lock: a record logged before ``os._exit`` or a segfault is in
the socket before the crash can happen, and the caller's reader reads it before it
sees the end of file. The worker's loggers get the levels the caller's had when the
pool started (:func:`caller_levels`), so a record the caller would drop is not sent.

In the caller, the engine (the process engine's reader thread) rebuilds the record,
adds its task's index in its submission (``record.corework_task``, None outside a task:
the engine knows which chunk the worker ran, and where that chunk starts) and hands it
(:func:`relay`) to the logger of the same name — its level, filters, handlers
and propagation, as for a record logged in the caller. The message is the worker's,
arguments merged, and a traceback comes formatted (``exc_text``), as
``logging.handlers.QueueHandler`` prepares records.

The wire form is a plain dict of the record's attributes; the ``logging`` module is
imported in the caller only once a pool relays (or a record arrives).
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RelayHandler", "caller_levels", "deliver", "install", "rebuild"]

#: The level names of the caller's configured loggers ("" is the root), and
#: ``logging.disable``'s level under the key None.
Levels = dict[str | None, int]

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def caller_levels() -> Levels:
    """The levels set on this process's loggers (callers import this module only where
    ``logging`` is imported already: elsewhere logging's defaults hold)."""
    manager = logging.Logger.manager
    levels: Levels = {"": logging.getLogger().level, None: manager.disable}
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


class RelayHandler(logging.Handler):
    """Sends each record to the caller with ``send(meta)`` (which serializes sends with
    the worker's other messages); ``where()`` says which task thread, chunk and task in
    it the current thread runs (None outside a task)."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None],
                 where: Callable[[], tuple[int, int, int] | None]) -> None:
        super().__init__(logging.NOTSET)
        self._send = send
        self._where = where
        self._busy = threading.local()  # a record logged while sending one is dropped

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "on", False):
            return  # logged by the sending itself: relaying it would loop
        self._busy.on = True
        try:
            place = self._where()
            thread, chunk_id, position = place if place is not None else (None, None, None)
            try:
                self._send(("log", thread, chunk_id, position, _wire(record)))
            except OSError:  # the channel is gone (the worker is exiting): keep it here
                _write_here(record)
        except Exception:
            self.handleError(record)
        finally:
            self._busy.on = False


def install(send: Callable[[tuple[Any, ...]], None],
            where: Callable[[], tuple[int, int, int] | None], levels: Levels | None) -> None:
    """Relay this worker's records to the caller (see the module docstring)."""
    root = logging.getLogger()
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):  # handlers inherited through fork
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
    levels = levels or {"": logging.WARNING, None: logging.NOTSET}
    logging.disable(levels.get(None) or logging.NOTSET)
    for name, level in levels.items():
        if name is not None:
            logging.getLogger(name or None).setLevel(level)
    root.addHandler(RelayHandler(send, where))


def _wire(record: logging.LogRecord) -> dict[str, Any]:
    """The record as plain data: message merged, traceback formatted; extras (``extra=``)
    that cannot be pickled are sent as their repr."""
    fields = dict(record.__dict__)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if record.exc_info:
        fields["exc_text"] = record.exc_text or _FORMATTER.formatException(record.exc_info)
    fields["exc_info"] = None
    fields.pop("message", None)
    for key, value in list(fields.items()):
        if key not in _STANDARD:
            try:
                pickle.dumps(value)
            except Exception:
                fields[key] = repr(value)
    return fields


_FORMATTER = logging.Formatter()


def _write_here(record: logging.LogRecord) -> None:
    """Where a record goes that can no longer reach the caller: this worker's stderr."""
    if sys.stderr is not None:
        sys.stderr.write(logging.Formatter(logging.BASIC_FORMAT).format(record) + "\n")


# ---------------------------------------------------------------------- the caller's side

def rebuild(fields: dict[str, Any], worker: int) -> logging.LogRecord:
    """A worker's record, as a LogRecord of this process, naming its ``worker``."""
    record = logging.makeLogRecord(fields)
    record.corework_worker = worker
    record.corework_task = None
    return record


def relay(fields: dict[str, Any], worker: int, first: int | None, position: int | None
          ) -> None:
    """Handle a record a worker sent as if it were logged here, by the task at
    ``position`` of the chunk whose first task is ``first`` in its submission (either
    None: outside a task, or not the chunk running now). A handler may shut the pool
    down: this thread is handing on, so that does not wait for it."""
    from .._handing_on import handing_on  # the caller's side only (see in_interpreter)

    task = first + position if first is not None and position is not None else None
    with handing_on():
        deliver(rebuild(fields, worker), task)


def deliver(record: logging.LogRecord, task: int | None) -> None:
    """Handle ``record`` as if it were logged here, by task ``task`` of its map."""
    record.corework_task = task
    logger = logging.getLogger(record.name if record.name != "root" else None)
    try:
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    except Exception:  # a filter that raised: there is no caller here to raise to
        logging.Handler().handleError(record)
