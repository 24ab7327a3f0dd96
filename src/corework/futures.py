"""Drop-in replacements for ``concurrent.futures``' executors, running on corework.

Change one import and existing code runs on corework::

    from corework.futures import ProcessPoolExecutor   # was: from concurrent.futures import ...

:class:`ProcessPoolExecutor`, :class:`ThreadPoolExecutor` and (Python 3.12+)
:class:`InterpreterPoolExecutor` take exactly the arguments their standard-library
namesakes take on the running Python, and each is also an instance of its namesake
(``isinstance(executor, concurrent.futures.ThreadPoolExecutor)`` is true, so asyncio's
``loop.set_default_executor`` accepts the thread one). Underneath each is a
:class:`corework.Pool` (engine ``"process"``, ``"thread"`` or ``"interpreter"``), so
corework's extras are there for whoever wants them: ``executor.options(timeout=5)`` for
per-task time limits, ``Future.kill()`` to stop a running task, a crashed worker costing
one task rather than the pool, ``imap``/``starmap``.

What differs from the standard library, and why:

* ``mp_context`` chooses corework's start method: ``"fork"`` and ``"spawn"`` mean what
  they say; ``"forkserver"`` runs on corework's launcher (a clean single-threaded process
  that forks each worker: what a fork server is for). The context's other parts (its
  ``Process`` class, its queues) are not used: corework has its own transport.
* Workers start with the pool, not on the first task (as in the standard library, the
  first ``submit`` to a pool whose initializer failed still returns a future, which
  fails; later ones raise). Threads are named ``{thread_name_prefix}_{n}`` as the
  standard library names them (for the interpreter executor: the threads that host the
  interpreters).
* Process workers cap their BLAS/OpenMP thread pools at cores // workers (corework's
  default, so that ``workers`` processes each running numpy do not oversubscribe the
  machine). The thread and interpreter executors leave the caller's native thread pools
  alone, as the standard library does.
* Of the standard library's private attributes, those that code written for it is known
  to read are kept: ``_max_workers``, ``_broken`` (False, or why the pool cannot run
  tasks), ``_mp_context`` and ``_thread_name_prefix``. No other (``_processes``,
  ``_threads``, ...) is.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import itertools
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, Literal

from ._errors import (
    InitializerFailed,
    PoolClosed,
    RemoteTraceback,
    SerializationError,
    WorkerCrashed,
)
from ._future import Future
from ._pool import Pool

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor"]
if sys.version_info >= (3, 12):
    __all__ += ["InterpreterPoolExecutor"]

#: The standard library's start methods, and the corework start method each runs on.
_START_METHODS = {"fork": "fork", "spawn": "spawn", "forkserver": "fork"}


def _cpu_count() -> int:
    """The CPU count the standard library's executors size themselves by on this Python."""
    count = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13+: affinity-aware
    return int(count() or 1)


def _check_max_workers(max_workers: int | None, default: int) -> int:
    if max_workers is None:
        return default
    if max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")
    return max_workers


def _check_initializer(initializer: Callable[..., object] | None) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")


def _initializer_class() -> type[Any]:
    """The class of the initializer every drop-in executor gives its workers.

    Made in a function so that cloudpickle sends it by value: a sub-interpreter cannot
    import corework (its C extensions do not load there), yet must run it."""

    class Initializer:
        """Runs a worker's initializer the way the standard library's workers do: the
        thread gets its name first, and an initializer that raises is logged to the
        ``concurrent.futures`` logger at CRITICAL before the pool breaks."""

        def __init__(self, initializer: Callable[..., object] | None,
                     initargs: tuple[Any, ...], thread_names: str | None) -> None:
            self.initializer = initializer
            self.initargs = initargs
            self.thread_names = thread_names  # set only where workers are our threads
            self.numbers = itertools.count()
            self.lock = threading.Lock()

        def __call__(self) -> None:
            if self.thread_names is not None:
                with self.lock:
                    number = next(self.numbers)
                threading.current_thread().name = f"{self.thread_names}_{number}"
            if self.initializer is None:
                return
            try:
                self.initializer(*self.initargs)
            except BaseException:
                logging.getLogger("concurrent.futures").critical(
                    "Exception in initializer:", exc_info=True)
                raise

        def __reduce__(self) -> tuple[Any, ...]:  # (a lock does not pickle)
            return type(self), (self.initializer, self.initargs, None)

        def __repr__(self) -> str:
            return repr(self.initializer)

    return Initializer


_Initializer = _initializer_class()


class _Executor(Pool):
    """What the drop-in classes share: a Pool, plus the standard library's
    ``_max_workers`` and ``_broken``."""

    _max_workers: int

    _submitted = False  # whether submit() has returned a future yet

    def _start(self, max_workers: int, engine: str,
               initializer: Callable[..., object] | None, initargs: tuple[Any, ...], *,
               thread_names: str | None = None, slot_names: str | None = None,
               start_method: str | None = None, max_tasks_per_child: int | None = None,
               native_threads: int | Literal["auto"] | None = None) -> None:
        """``thread_names``: named by the initializer, in the worker (thread engine);
        ``slot_names``: named by the engine (the threads hosting sub-interpreters)."""
        self._max_workers = max_workers
        setup: Callable[..., object] | None = initializer
        if initializer is not None or thread_names is not None:
            setup, initargs = _Initializer(initializer, tuple(initargs), thread_names), ()
        Pool.__init__(self, max_workers, engine=engine, initializer=setup, initargs=initargs,
                      start_method=start_method, max_tasks_per_worker=max_tasks_per_child,
                      native_threads=native_threads, _thread_names=slot_names)
        self._scheduler.translate = type(self)._stdlib_error  # no cycle through the pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """As the standard library's: arguments that cannot be pickled fail the future
        (a ``PicklingError`` from ``result()``), and a pool shut down raises RuntimeError.
        The standard library starts its workers on ``submit``, so its first ``submit``
        never finds the pool broken (by a failed initializer): here too, that future fails
        instead, and a later ``submit`` raises."""
        try:
            refused = self._refuse(fn, args, kwargs)
            if refused is not None:
                self._scheduler.check_open()
                future = _failed(refused)
            else:
                future = super().submit(fn, *args, **kwargs)
        except SerializationError as exc:
            if exc.stage != "pickle-argument":
                raise
            future = _failed(exc)
        except PoolClosed:
            when = "interpreter shutdown" if _exiting() else "shutdown"
            raise RuntimeError(f"cannot schedule new futures after {when}") from None
        except concurrent.futures.BrokenExecutor as exc:
            error = self._stdlib_error(exc)
            if self._submitted:
                raise error from error.__cause__
            future = _failed(error)
        self._submitted = True
        return future

    def _refuse(self, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> BaseException | None:
        """Why the standard library's executor would fail this task before it runs, or
        None (see the interpreter executor on 3.14)."""
        return None

    @staticmethod
    def _stdlib_error(error: BaseException) -> BaseException:
        """The exception the standard library's executor would give for ``error``."""
        return error

    @property
    def _broken(self) -> Any:  # the standard library's bool | str
        """False, or why no task can run any more (the standard library's convention)."""
        error = getattr(self._scheduler, "_broken", None)
        return False if error is None else str(error)

    @_broken.setter
    def _broken(self, value: Any) -> None:
        raise AttributeError("_broken is read-only: it tells whether the pool can run tasks")

    def __repr__(self) -> str:
        return f"<corework.futures.{type(self).__name__} workers={self.workers}>"


class ProcessPoolExecutor(_Executor, concurrent.futures.process.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor``, on corework's process engine.

    ``max_workers`` defaults to the CPU count, as in the standard library. ``mp_context``
    picks the start method (see the module docstring: ``"forkserver"`` runs on corework's
    launcher); without one, the standard library's default start method on this Python is
    used, and ``"spawn"`` when ``max_tasks_per_child`` is given. As in the standard
    library, ``max_tasks_per_child`` (3.11+) refuses the ``"fork"`` start method, although
    corework's forked workers could honour it: ``corework.Pool(max_tasks_per_worker=...)``
    has no such limit.
    """

    _mp_context: multiprocessing.context.BaseContext | None

    if sys.version_info >= (3, 11):
        def __init__(self, max_workers: int | None = None,
                     mp_context: multiprocessing.context.BaseContext | None = None,
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = (), *,
                     max_tasks_per_child: int | None = None) -> None:
            self._configure(max_workers, mp_context, initializer, initargs,
                            max_tasks_per_child)
    else:  # pragma: no cover - exercised on Python 3.10
        def __init__(self, max_workers: int | None = None,
                     mp_context: multiprocessing.context.BaseContext | None = None,
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = ()) -> None:
            self._configure(max_workers, mp_context, initializer, initargs, None)

    def _configure(self, max_workers: int | None,
                   mp_context: multiprocessing.context.BaseContext | None,
                   initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
                   max_tasks_per_child: int | None) -> None:
        workers = _check_max_workers(max_workers, _cpu_count())
        if mp_context is None:
            mp_context = multiprocessing.get_context(
                "spawn" if max_tasks_per_child is not None else None)
        self._mp_context = mp_context
        method = mp_context.get_start_method(allow_none=False)
        if method not in _START_METHODS:
            raise ValueError(f"mp_context with start method {method!r} is not supported; "
                             f"use one of {', '.join(map(repr, _START_METHODS))}")
        _check_initializer(initializer)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if method == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                                 "multiprocessing start method; supply a different "
                                 "mp_context (corework.Pool(max_tasks_per_worker=...) "
                                 "has no such limit).")
        self._start(workers, "process", initializer, initargs,
                    start_method=_START_METHODS[method],
                    max_tasks_per_child=max_tasks_per_child, native_threads="auto")

    if sys.version_info >= (3, 14):  # pragma: no cover - exercised on Python 3.14
        def terminate_workers(self) -> None:
            """As the standard library's (through its ``_force_shutdown``)."""
            self._force_shutdown(operation=concurrent.futures.process._TERMINATE)

        def kill_workers(self) -> None:
            """As the standard library's (through its ``_force_shutdown``)."""
            self._force_shutdown(operation=concurrent.futures.process._KILL)

        def _force_shutdown(self, operation: str) -> None:
            if operation == concurrent.futures.process._TERMINATE:
                Pool.terminate_workers(self)
            elif operation == concurrent.futures.process._KILL:
                Pool.kill_workers(self)
            else:
                raise ValueError(f"Unsupported operation: {operation!r}")

    @staticmethod
    def _stdlib_error(error: BaseException) -> BaseException:
        """A dead worker, or data that could not be loaded where it arrived, breaks a
        standard-library process pool (``BrokenProcessPool``); what pickling a result
        raised in the worker reaches the caller as is; a worker's traceback is the
        standard library's ``_RemoteTraceback`` (from 3.15, a dead worker's exit code is
        one too, as gh-139462 has it). corework's own types stay true too."""
        if isinstance(error, WorkerCrashed):
            died = _WorkerDied(str(error), exitcode=error.exitcode)
            if (sys.version_info >= (3, 15) and error.__cause__ is None
                    and error.exitcode is not None):  # gh-139462: say how the worker ended
                died.__cause__ = concurrent.futures.process._RemoteTraceback(
                    f"\n'''\nA worker process terminated abruptly with exit code "
                    f"{error.exitcode}'''")
            error = _like(error, died)
        elif isinstance(error, SerializationError):
            if error.stage in ("unpickle-argument", "unpickle-function", "unpickle-result"):
                error = _like(error, _LoadFailed(str(error), stage=error.stage,
                                                 original=error.original))
            elif error.stage == "pickle-result" and error.original is not None:
                error = _like(error, error.original)
        if isinstance(error.__cause__, RemoteTraceback):
            text: Any = str(error.__cause__)  # typeshed says a traceback: it is the text
            error.__cause__ = concurrent.futures.process._RemoteTraceback(text)
        return error


class _WorkerDied(WorkerCrashed, concurrent.futures.process.BrokenProcessPool):
    """A worker process died: corework's ``WorkerCrashed`` and the standard library's
    ``BrokenProcessPool`` (only that task is lost, and the pool goes on)."""


class _LoadFailed(SerializationError, concurrent.futures.process.BrokenProcessPool):
    """A task's arguments or result could not be unpickled where they arrived: corework's
    ``SerializationError`` and the standard library's ``BrokenProcessPool``."""


def _failed(error: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def _like(old: BaseException, new: BaseException) -> BaseException:
    """``new``, with ``old``'s notes, cause and traceback."""
    if new is not old:
        notes = getattr(old, "__notes__", None)
        if notes:
            new.__notes__ = list(notes)  # type: ignore[attr-defined]
        new.__cause__ = new.__cause__ or old.__cause__
        new.__traceback__ = old.__traceback__
    return new


def _log_initializer_failure(error: BaseException) -> None:
    """Log a worker's failed initializer here, as the standard library's executors do
    (a sub-interpreter's own log goes to that interpreter's logging, not this one's)."""
    if isinstance(error, InitializerFailed):
        cause = error.__cause__ or error
        logging.getLogger("concurrent.futures").critical(
            "Exception in initializer:", exc_info=(type(cause), cause, cause.__traceback__))


class _LogOnce:
    """The scheduler's ``on_broken`` hook of an interpreter executor: logs a failed
    initializer once, whether the engine reported it before the hook was set (the
    workers start with the pool) or after. Holds no reference to the pool."""

    def __init__(self, translate: Callable[[BaseException], BaseException]) -> None:
        self._translate = translate
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, error: BaseException) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        _log_initializer_failure(self._translate(error))


def _exiting() -> bool:
    """Whether the program's end has shut corework's pools down already."""
    from . import _pool

    return _pool.exiting()


class ThreadPoolExecutor(_Executor, concurrent.futures.thread.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor``, on corework's thread engine.

    ``max_workers`` defaults to ``min(32, CPU count + 4)`` and threads are named
    ``{thread_name_prefix}_{n}``, as in the standard library. An instance of
    ``concurrent.futures.ThreadPoolExecutor``, so ``loop.set_default_executor`` takes it.
    """

    _counter = itertools.count().__next__

    if sys.version_info >= (3, 14):  # pragma: no cover - exercised on Python 3.14
        def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = (), **ctxkwargs: Any) -> None:
            self._configure(max_workers, thread_name_prefix, initializer, initargs,
                            ctxkwargs)
    else:
        def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = ()) -> None:
            self._configure(max_workers, thread_name_prefix, initializer, initargs, {})

    def _configure(self, max_workers: int | None, thread_name_prefix: str,
                   initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
                   ctxkwargs: dict[str, Any]) -> None:
        workers = _check_max_workers(max_workers, min(32, _cpu_count() + 4))
        if ctxkwargs:  # 3.14: for a subclass's prepare_context(); a thread's takes none
            raise TypeError(f"{type(self).__name__}.prepare_context() got an unexpected "
                            f"keyword argument {next(iter(ctxkwargs))!r}")
        _check_initializer(initializer)
        self._thread_name_prefix = (thread_name_prefix
                                    or f"{type(self).__name__}-{self._counter()}")
        self._start(workers, self._engine(), initializer, initargs,
                    thread_names=self._names())

    def _engine(self) -> str:
        return "thread"

    def _names(self) -> str | None:
        return self._thread_name_prefix


if sys.version_info >= (3, 12):
    class _Interpreters(ThreadPoolExecutor):
        """``concurrent.futures.InterpreterPoolExecutor`` (3.14), on corework's
        interpreter engine: one sub-interpreter with its own GIL per worker, also on
        Python 3.12 and 3.13.

        As in 3.14, it is a ``ThreadPoolExecutor`` subclass, ``max_workers`` defaults to
        ``min(32, CPU count + 4)``, functions, arguments and results are pickled, and
        ``initializer`` runs in each worker's interpreter. The threads that host the
        interpreters are named ``{thread_name_prefix}_{n}``. On 3.14 and later it also
        keeps 3.14's rules: what 3.14 cannot share with an interpreter (a closure, an
        instance of a local class, a bound method of one) fails the task with
        ``concurrent.interpreters.NotShareableError`` (an initializer: breaks the pool,
        ``BrokenInterpreterPool``), and a task's exception is caused by
        ``concurrent.interpreters.ExecutionFailed``.
        """

        def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                     initializer: Callable[..., object] | None = None,
                     initargs: tuple[Any, ...] = ()) -> None:
            self._configure(max_workers, thread_name_prefix, initializer, initargs, {})

        def _engine(self) -> str:
            return "interpreter"

        def _start(self, max_workers: int, engine: str,
                   initializer: Callable[..., object] | None, initargs: tuple[Any, ...],
                   **kwargs: Any) -> None:
            refused = self._refuse_initializer(initializer, initargs)
            if refused is not None:
                initializer, initargs = None, ()
            super()._start(max_workers, engine, initializer, initargs,
                           slot_names=self._thread_name_prefix, **kwargs)
            log = _LogOnce(type(self)._stdlib_error)
            self._scheduler.on_broken = log
            if refused is not None:
                self._scheduler.engine_broken(refused)
            broken = getattr(self._scheduler, "_broken", None)
            if broken is not None:  # reported before the hook was there
                log(broken)

        def _refuse_initializer(self, initializer: Callable[..., object] | None,
                                initargs: tuple[Any, ...]) -> BaseException | None:
            """Why the initializer breaks the pool before it runs, or None."""
            return None

        def _names(self) -> str | None:
            return None  # the engine names the threads; the initializer runs in there

    if sys.version_info >= (3, 14):  # pragma: no cover - exercised on Python 3.14
        import concurrent.futures.interpreter
        import concurrent.interpreters

        class _BrokenInterpreters(InitializerFailed,
                                  concurrent.futures.interpreter.BrokenInterpreterPool):
            """A worker's initializer failed, or could not be shared with its interpreter:
            corework's ``InitializerFailed`` and the standard library's
            ``BrokenInterpreterPool``."""

        class InterpreterPoolExecutor(_Interpreters, concurrent.futures.InterpreterPoolExecutor):
            __doc__ = _Interpreters.__doc__

            def _refuse(self, fn: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> BaseException | None:
                return _not_shareable((fn, args, kwargs))

            def _refuse_initializer(self, initializer: Callable[..., object] | None,
                                    initargs: tuple[Any, ...]) -> BaseException | None:
                if initializer is None:
                    return None
                refused = _not_shareable((initializer, initargs, {}))
                if refused is None:
                    return None
                broken = _BrokenInterpreters(
                    f"the initializer {initializer!r} cannot be shared with a "
                    f"sub-interpreter ({refused.__cause__}). No task can run in this pool.")
                broken.__cause__ = refused
                return broken

            @staticmethod
            def _stdlib_error(error: BaseException) -> BaseException:
                """A failed initializer is a ``BrokenInterpreterPool``; what a task or an
                initializer raised in its interpreter is caused by ``ExecutionFailed``, as
                3.14's ``Interpreter.call()`` raises it."""
                if isinstance(error, InitializerFailed) and not isinstance(
                        error, concurrent.futures.interpreter.BrokenInterpreterPool):
                    error = _like(error, _BrokenInterpreters(str(error)))
                for raised in (error, error.__cause__):
                    if raised is not None and isinstance(raised.__cause__, RemoteTraceback):
                        raised.__cause__ = _execution_failed(raised, raised.__cause__.tb)
                return error

        def _execution_failed(error: BaseException, traceback_text: str) -> BaseException:
            """3.14's ``ExecutionFailed`` for ``error``, raised in an interpreter where its
            traceback was ``traceback_text``: its ``excinfo`` has ``type`` (the names of
            the exception's type), ``msg``, ``formatted`` and ``errdisplay``."""
            kind = type(error)
            name = (kind.__qualname__ if kind.__module__ == "builtins"
                    else f"{kind.__module__}.{kind.__qualname__}")
            message = str(error)
            excinfo = types.SimpleNamespace(
                type=types.SimpleNamespace(__name__=kind.__name__,
                                           __qualname__=kind.__qualname__,
                                           __module__=kind.__module__),
                msg=message, formatted=f"{name}: {message}" if message else name,
                errdisplay=traceback_text.strip())
            return concurrent.interpreters.ExecutionFailed(excinfo)

        def _not_shareable(obj: Any) -> BaseException | None:
            """Why 3.14 could not share ``obj`` with another interpreter, or None.

            3.14 shares a task's function, arguments and keyword arguments (a tuple, item
            by item) as cross-interpreter data where the type has it (str, int, bytes,
            queues, ...), a function that needs no state (no closure, no defaults, no
            globals but builtins) as its code, and anything else with the standard
            pickle — by reference, so closures, local classes, their instances and bound
            methods are refused; pickled data must also load."""
            if type(obj) is tuple:
                for item in obj:
                    refused = _not_shareable(item)
                    if refused is not None:
                        return refused
                return None
            if concurrent.interpreters.is_shareable(obj):
                return None
            if isinstance(obj, types.FunctionType) and _stateless(obj):
                return None
            what = f"{obj!r:.200}"
            try:
                data = pickle.dumps(obj)
            except Exception as exc:
                return _refusal(f"{what} could not be pickled", exc)
            try:
                pickle.loads(data)
            except Exception as exc:
                return _refusal(f"{what} could not be unpickled", exc)
            return None

        def _refusal(why: str, cause: BaseException) -> BaseException:
            reason = concurrent.interpreters.NotShareableError(why)
            reason.__cause__ = cause
            error = concurrent.interpreters.NotShareableError("args not shareable")
            error.__cause__ = reason
            return error

        _GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME",
                                 "STORE_NAME", "DELETE_NAME"})

        def _stateless(fn: types.FunctionType) -> bool:
            """Whether 3.14 shares ``fn`` as its code: no closure, no defaults, and no
            global names but builtins (in its code or any code nested in it)."""
            if fn.__closure__ or fn.__defaults__ or fn.__kwdefaults__:
                return False
            builtins = fn.__builtins__ if isinstance(fn.__builtins__, dict) else vars(
                fn.__builtins__)
            codes = [fn.__code__]
            import dis

            while codes:
                code = codes.pop()
                for instruction in dis.get_instructions(code):
                    if instruction.opname in _GLOBAL_OPS and (
                            instruction.argval not in builtins
                            or instruction.argval in fn.__globals__):
                        return False
                codes += [const for const in code.co_consts if isinstance(const, types.CodeType)]
            return True
    else:
        class InterpreterPoolExecutor(_Interpreters):
            __doc__ = _Interpreters.__doc__
