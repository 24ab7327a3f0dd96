"""``corework.futures.InterpreterPoolExecutor`` (Python 3.12+): 3.14's, on corework's
interpreter engine — with 3.14's sharing rules there."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

from .._errors import (
    InitializerFailed,
    RemoteTraceback,
)
from ._executor import LogOnce, like
from ._thread import ThreadPoolExecutor

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
            log = LogOnce(type(self)._stdlib_error)
            self._scheduler.on_broken = log
            if refused is not None:
                self._scheduler.engine_broken(refused)
            broken = self._scheduler.broken
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
                    error = like(error, _BrokenInterpreters(str(error)))
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
