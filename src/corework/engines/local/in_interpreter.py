"""The code that runs *inside* each sub-interpreter of the interpreter engine.

It is loaded by file path, not imported as part of ``corework``: the package imports C
extensions (psutil, ctypes) that cannot load in an isolated sub-interpreter. So this
module imports only the standard library (and cloudpickle, pure Python, when a value needs
it: pickle itself imports it to load a function sent by value), and speaks plain
data — bytes, ints, tuples — to the main interpreter, which rebuilds corework's types.

A *watchdog* thread in the sub-interpreter waits on a pipe; a byte from ``kill`` makes it
raise ``Interrupted`` in the task at its next bytecode (an asynchronous exception: only a
thread of the same interpreter can send one, and signals never reach sub-interpreters),
through corework's ``engines/local/interrupt.py``, which schedules it again if it went off
inside a weakref or GC callback and was dropped. That needs ctypes, which
sub-interpreters can load from Python 3.13 on; on 3.12 a killed task runs on, abandoned,
until it returns.
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
_position: int | None = None  # the running task's place in its chunk
_logs: list[tuple[Any, ...]] = []  # records logged since the last chunk's report
_task_lock = threading.Lock()  # _in_task and _killed, between the runner and the watchdog


class Interrupted(BaseException):
    """Raised into a task by ``kill``; never escapes this module."""


def _watch(kill_fd: int) -> None:
    global _killed
    while os.read(kill_fd, 1) == b"k":
        with _task_lock:  # the task cannot end between this look and the interrupt
            first, _killed = not _killed, True
            if first and _in_task:  # once: a second one could go off in the first's handler
                _interrupt_runner()


def _interrupt_runner() -> None:
    """Have the runner thread raise ``Interrupted`` (again if it is dropped), until it
    acknowledges it at the end of the task."""
    try:  # ctypes loads in sub-interpreters from Python 3.13 on
        interrupts = _load_by_path("_corework_interrupt", "engines", "local", "interrupt.py")
    except ImportError:  # 3.12: the task cannot be interrupted; the caller abandons it
        return
    interrupts.interrupt_thread(_runner_ident or 0, Interrupted)


def _task_ended() -> None:
    """The runner's task is over: no interrupt may go off after this."""
    global _in_task
    with _task_lock:  # nothing else in it: an interrupt can no longer be scheduled
        _in_task = False
    # An interrupt scheduled just before still goes off (here, or in run()'s caller):
    # harmless, as a killed task's slot is retired and its interpreter destroyed.
    interrupts = sys.modules.get("_corework_interrupt")  # loaded only by a kill
    if interrupts is not None:
        interrupts.acknowledge()


def start(path: str, kill_fd: int, setup_blob: bytes, levels_blob: bytes = b"") -> bytes | None:
    """Set the sub-interpreter up (``path``: the caller's sys.path, NUL-separated); a
    pickled failure of the initializer, or None. With ``levels_blob`` (the caller's
    logger levels), what is logged here goes back with each chunk's report."""
    global _runner_ident
    sys.path[:] = path.split("\0")
    _runner_ident = threading.get_ident()
    threading.Thread(target=_watch, args=(kill_fd,), name="corework-watchdog").start()
    if levels_blob:
        _load_by_path("_corework_log_relay", "engines", "log_relay.py").install(
            _logs.append, _where, pickle.loads(levels_blob))
    initializer, initargs = pickle.loads(setup_blob)
    if initializer is None:
        return None
    try:
        _namespaces().run_initializer(initializer, initargs)
    except BaseException as exc:
        return _dumps(_failure(exc))
    return None


def main_namespace() -> dict[str, Any]:
    """This sub-interpreter's one namespace for the caller's ``__main__`` functions (their
    pickles name this function: see ``transport.picklers.in_band_dumps``), so a global
    the initializer sets is seen by the tasks, as in worker processes."""
    return _namespaces().main_namespace()  # type: ignore[no-any-return]


def _namespaces() -> Any:
    """corework's ``transport/main_namespace.py``."""
    return _load_by_path("_corework_main_namespace", "transport", "main_namespace.py")


def _where() -> tuple[int, int, int] | None:
    """For the log relay's handler: (thread, chunk, place in it) of the running task."""
    return (0, 0, _position) if _in_task and _position is not None else None


def _load_by_path(name: str, *path: str) -> Any:
    """A module of corework that needs only the standard library, loaded by its path
    (as this one is: the package cannot be imported here), once."""
    module = sys.modules.get(name)
    if module is None:
        import importlib.util

        here = os.path.dirname(os.path.abspath(__file__))  # corework/engines/local
        package = os.path.dirname(os.path.dirname(here))
        spec = importlib.util.spec_from_file_location(name, os.path.join(package, *path))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:  # e.g. ctypes on 3.12: no half-loaded module is left
            del sys.modules[name]
            raise
    return module


def run(fn_id: int, fn_blob: bytes | None, star: int, items_blob: bytes, out_fd: int) -> None:
    """Run a chunk; write ``(results, failures, seconds, error, interrupted, logs)`` to
    out_fd (``logs``: ``(place in the chunk or None, record fields)`` of each record).

    User code runs while loading the function and the arguments, in the calls, and while
    pickling the results: a kill interrupts any of them."""
    global _in_task, _position
    started = time.perf_counter()
    _position = None  # what loading the function or arguments logs belongs to no task
    results: list[Any] = []
    failures: dict[int, tuple[Any, ...]] = {}
    error = None
    loading = "function"
    try:
        with _task_lock:
            _in_task, killed = True, _killed
        if killed:  # killed before it started: the watchdog saw no task to interrupt
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
        data = _pack((results, failures, time.perf_counter() - started, error, False,
                      _taken_logs()))
    except Interrupted:
        data = _dumps(([], {}, time.perf_counter() - started, None, True, _taken_logs()))
    finally:
        _task_ended()  # a kill that came as the task ended must not fire later
    os.ftruncate(out_fd, 0)
    os.pwrite(out_fd, data, 0)


def _taken_logs() -> list[tuple[Any, ...]]:
    taken = [(meta[3], meta[4]) for meta in _logs]
    _logs.clear()
    return taken


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
    global _position
    for position, item in enumerate(items):
        _position = position
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
    results, failures, seconds, error, interrupted, logs = report
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
    return results, failures, seconds, error, interrupted, logs
