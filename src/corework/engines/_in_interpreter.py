"""The code that runs *inside* each sub-interpreter of the interpreter engine.

It is loaded by file path, not imported as part of ``corework``: the package imports C
extensions (psutil, ctypes) that cannot load in an isolated sub-interpreter. So this
module imports only the standard library (and cloudpickle, pure Python, when a value needs
it: pickle itself imports it to load a function sent by value), and speaks plain
data — bytes, ints, tuples — to the main interpreter, which rebuilds corework's types.

A *watchdog* thread in the sub-interpreter waits on a pipe; a byte from ``kill`` makes it
raise ``Interrupted`` in the task at its next bytecode (an asynchronous exception: only a
thread of the same interpreter can send one, and signals never reach sub-interpreters).
That needs ctypes, which sub-interpreters can load from Python 3.13 on; on 3.12 a killed
task runs on, abandoned, until it returns.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time

TYPE_CHECKING = False  # typing is not imported: it is most of a new interpreter's start-up
if TYPE_CHECKING:
    from typing import Any

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_functions: dict[int, Any] = {}
_runner_ident: int | None = None
_in_task = False  # only a task is interrupted, never this module's own code
_killed = False  # a kill came: the task stops now, or as soon as it starts


class Interrupted(BaseException):
    """Raised into a task by ``kill``; never escapes this module."""


def _watch(kill_fd: int) -> None:
    global _killed
    while os.read(kill_fd, 1) == b"k":
        _killed = True
        if _in_task:
            _raise_in_runner(Interrupted)


def _raise_in_runner(exc_type: type[BaseException] | None) -> None:
    """Schedule ``exc_type`` (None: cancel a pending one) in the runner thread."""
    try:
        import ctypes  # loads in sub-interpreters from Python 3.13 on
    except ImportError:  # 3.12: the task cannot be interrupted; the caller abandons it
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(_runner_ident or 0), ctypes.py_object(exc_type) if exc_type else None)


def start(path: str, kill_fd: int, setup_blob: bytes) -> bytes | None:
    """Set the sub-interpreter up (``path``: the caller's sys.path, NUL-separated); a
    pickled failure of the initializer, or None."""
    global _runner_ident
    sys.path[:] = path.split("\0")
    _runner_ident = threading.get_ident()
    threading.Thread(target=_watch, args=(kill_fd,), name="corework-watchdog").start()
    initializer, initargs = pickle.loads(setup_blob)
    if initializer is None:
        return None
    try:
        initializer(*initargs)
    except BaseException as exc:
        return _dumps(_failure(exc))
    return None


def run(fn_id: int, fn_blob: bytes | None, star: int, items_blob: bytes, out_fd: int) -> None:
    """Run a chunk; write ``(results, failures, seconds, error, interrupted)`` to out_fd.

    User code runs while loading the function and the arguments, in the calls, and while
    pickling the results: a kill interrupts any of them."""
    global _in_task
    started = time.perf_counter()
    results: list[Any] = []
    failures: dict[int, tuple[Any, ...]] = {}
    error = None
    loading = "function"
    try:
        _in_task = True
        if _killed:  # killed before it started: the watchdog saw no task to interrupt
            raise Interrupted
        try:
            if fn_blob is not None:
                _functions[fn_id] = _load(fn_blob)
            fn = _functions[fn_id]
            if isinstance(fn, BaseException):  # it failed to load: every chunk says why
                raise fn
            loading = "arguments"
            items = pickle.loads(items_blob)
        except Interrupted:
            raise
        except BaseException as exc:  # the function or arguments could not be loaded here
            error = (loading, _failure(exc))
        else:
            _call_each(fn, star, items, results, failures)
        data = _pack((results, failures, time.perf_counter() - started, error, False))
    except Interrupted:
        data = _dumps(([], {}, time.perf_counter() - started, None, True))
    finally:
        _in_task = False
        _raise_in_runner(None)  # a kill that came as the task ended must not fire later
    os.ftruncate(out_fd, 0)
    os.pwrite(out_fd, data, 0)


def _pack(report: tuple[Any, ...]) -> bytes:
    try:
        return _dumps(report)
    except Interrupted:
        raise
    except BaseException:  # a result whose pickling raises even SystemExit fails alone
        return _dumps(_without_unpicklable(report))


def _load(fn_blob: bytes) -> Any:
    try:
        return pickle.loads(fn_blob)
    except Interrupted:
        raise
    except BaseException as exc:  # e.g. its module imports one that sub-interpreters can't load
        return exc


def _call_each(fn: Any, star: int, items: Any, results: list[Any],
               failures: dict[int, tuple[Any, ...]]) -> None:
    for position, item in enumerate(items):
        try:
            if star == 0:
                results.append(fn(item))
            elif star == 1:
                results.append(fn(*item))
            else:
                results.append(fn(*item[0], **item[1]))
        except Interrupted:
            raise
        except BaseException as exc:  # KeyboardInterrupt, GeneratorExit too: its own
            results.append(None)
            failures[position] = _failure(exc)


def _failure(exc: BaseException) -> tuple[Any, ...]:
    """(pickled exception or None, type name, message, formatted traceback)."""
    import traceback  # only on failures: a costly import for a new interpreter

    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = _dumps(exc)
        pickle.loads(blob)
    except Exception:
        blob = None
    try:
        message = str(exc)
    except BaseException as failed:  # its own __str__ raises: the task fails all the same
        message = f"<str() of the exception failed: {type(failed).__name__}>"
    return (blob, type(exc).__qualname__, message, formatted)


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, _PROTOCOL)
    except Exception:
        import cloudpickle  # only when needed: importing it costs a new interpreter ~20 ms

        return cloudpickle.dumps(obj, protocol=_PROTOCOL)  # type: ignore[no-any-return]


def _without_unpicklable(report: tuple[Any, ...]) -> tuple[Any, ...]:
    results, failures, seconds, error, interrupted = report
    for position, value in enumerate(results):
        try:
            _dumps(value)
        except Interrupted:
            raise
        except BaseException as exc:
            results[position] = None
            message = (f"the task's result {type(value).__qualname__} could not be pickled in "
                       f"the sub-interpreter to send it back: {type(exc).__name__}: {exc}. "
                       "Return plain data.")
            failures[position] = (None, "SerializationError", message, "")
    return results, failures, seconds, error, interrupted
