"""The interpreter engine: one sub-interpreter, with its own GIL, per slot (Python 3.12+).

Each slot is a thread of this process that owns an isolated sub-interpreter and runs its
chunks there, so pure-Python CPU work runs in parallel without the cost of processes.
Functions and arguments are pickled (sub-interpreters share no objects); the code that
runs inside is ``in_interpreter``, loaded by path because the ``corework`` package itself
imports C extensions that sub-interpreters cannot load — as are numpy and many others: a
task that needs one fails with an ImportError that says to use ``engine="process"``.

The low-level modules are CPython's own: ``_interpreters`` (3.13+, what 3.14's
``concurrent.interpreters`` is built on) and ``_xxsubinterpreters`` (3.12). The
``interpreters-pep-734`` backport was tried: on 3.12 it needs a compiled companion that
crashed here, and it adds nothing this engine uses.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pickle
import re
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..._errors import EngineUnavailable, RemoteTraceback, SerializationError
from ...transport.failure import Failure
from ...transport.packing import pack_for_workers, pack_items
from ..contract import ChunkReport, ChunkWork, FunctionRef, WorkerSetup, initializer_failed
from .slots import Slot, SlotEngine

_INSIDE = Path(__file__).with_name("in_interpreter.py")


def _load_inside() -> None:
    """Load ``in_interpreter`` here too, under the name it has in sub-interpreters: the
    pickles of ``__main__`` functions name its ``main_namespace`` (see ``in_band_dumps``)."""
    import importlib.util

    if "_corework_in_interpreter" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("_corework_in_interpreter", _INSIDE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_load_inside()
_BOOT = """
import importlib.util, sys
_spec = importlib.util.spec_from_file_location("_corework_in_interpreter", inside)
_cw = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _cw
_spec.loader.exec_module(_cw)
_failure = _cw.start(path, kill_fd, setup, levels)
import os
os.ftruncate(out_fd, 0)
os.pwrite(out_fd, _failure or b"", 0)
"""
_RUN = "_cw.run(fn_id, fn_blob, star, items, out_fd)"
_JOIN_WATCHDOG = """
import threading
for _t in threading.enumerate():
    if _t.name == "corework-watchdog":
        _t.join()
"""
_NO_SUBINTERPRETERS = re.compile(r"module (\S+) does not support loading in subinterpreters")


class _Runtime:
    """CPython's low-level sub-interpreter calls, the same on 3.12 and 3.13+."""

    def __init__(self) -> None:
        if sys.version_info < (3, 12):
            raise EngineUnavailable(
                f"engine='interpreter' needs Python 3.12 or newer (sub-interpreters with "
                f"their own GIL); this is {sys.version.split()[0]}. Use engine='process'.")
        if sys.version_info >= (3, 13):
            import _interpreters as module
        else:  # the standard library's name on 3.12 (a backport's _interpreters may crash)
            import _xxsubinterpreters as module  # type: ignore[import-not-found]
        self._module: Any = module

    def create(self) -> Any:
        """A new isolated sub-interpreter with its own GIL; keep what this returns (on 3.12
        the interpreter is destroyed once its ID object is collected)."""
        if hasattr(self._module, "exec"):
            return self._module.create("isolated")
        return self._module.create()  # isolated by default on 3.12

    def run(self, interp: Any, code: str, shared: dict[str, Any]) -> None:
        """Run ``code`` in the sub-interpreter; RuntimeError with its traceback if it raises."""
        if hasattr(self._module, "exec"):
            info = self._module.exec(interp, code, shared)
            if info is not None:
                raise RuntimeError(getattr(info, "formatted", None) or str(info))
            return
        try:
            self._module.run_string(interp, code, shared)
        except self._module.RunFailedError as exc:
            raise RuntimeError(str(exc)) from None

    def destroy(self, interp: Any) -> None:
        with contextlib.suppress(Exception):
            self._module.destroy(interp)


class _InterpreterSlot(Slot):
    """A slot whose thread owns a sub-interpreter, with a pipe to interrupt its task."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.functions: set[int] = set()  # ids the sub-interpreter holds
        self.kill_r, self.kill_w = os.pipe()

    def interrupt(self) -> None:
        """Make the running task raise at its next line of Python (see in_interpreter)."""
        with contextlib.suppress(OSError):
            os.write(self.kill_w, b"k")
        _interrupted.add(self)


#: How long the end of the program waits for a killed task still blocked in C code.
EXIT_WAIT_SECONDS = 5.0
_interrupted: weakref.WeakSet[_InterpreterSlot] = weakref.WeakSet()  # alive with their thread


def _exit_past_abandoned() -> None:
    """At exit, a sub-interpreter whose killed task is still blocked in C code would stop
    Python's own shutdown for ever (3.13 waits for it to end): wait a while, then end the
    process at once, saying why."""
    stuck = [slot for slot in list(_interrupted) if slot.abandoned() and slot.thread]
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    for slot in stuck:
        assert slot.thread is not None
        slot.thread.join(max(0.0, deadline - time.monotonic()))
    if any(slot.thread is not None and slot.thread.is_alive() for slot in stuck):
        where = "blocked in C code" if sys.version_info >= (3, 13) else \
            "running (Python 3.12 cannot interrupt a sub-interpreter's task)"
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.shutdown()  # its handlers' buffers: os._exit skips the atexit that would
        sys.stdout.flush()
        sys.stderr.write(
            f"corework: a task killed on engine='interpreter' is still {where}, and "
            "Python cannot end a sub-interpreter while it runs: the process exits now, "
            "with status 1, without the rest of Python's shutdown. Run tasks that may "
            "not return on engine='process', whose kill() always stops them.\n")
        sys.stderr.flush()
        os._exit(1)


atexit.register(_exit_past_abandoned)
os.register_at_fork(after_in_child=_interrupted.clear)  # a child runs none of them


class InterpreterEngine(SlotEngine):
    """Slots are threads named ``corework-interpreter-N`` (or ``{setup.thread_names}_N``),
    each with a sub-interpreter."""

    thread_name = "corework-interpreter"

    def __init__(self, workers: int, setup: WorkerSetup) -> None:
        super().__init__(workers, setup)
        self._runtime = _Runtime()
        self._setup_blob = pack_for_workers(
            (setup.initializer, setup.initargs),
            f"the initializer {setup.initializer!r} or its initargs", in_band=True).data
        relay = setup.relay_logs and setup.log_levels is not None  # logging is in use here
        self._levels_blob = pickle.dumps(setup.log_levels) if relay else b""

    def new_slot(self, index: int) -> Slot:
        return _InterpreterSlot(index)

    def serve(self, slot: Slot) -> None:
        assert isinstance(slot, _InterpreterSlot)
        out_fd = _scratch_file()
        interp = None
        try:
            interp = self._runtime.create()
            if self._boot(slot, interp, out_fd):
                self._events.worker_ready(slot.index)
                self.serve_chunks(slot, functools.partial(self._run, slot, interp, out_fd))
        except BaseException as exc:  # no task may wait for ever on a dead slot
            if not slot.retired:
                self._events.engine_broken(exc)
        finally:
            os.close(slot.kill_w)  # the watchdog's end of file: it exits
            if interp is not None:
                with contextlib.suppress(RuntimeError):
                    self._runtime.run(interp, _JOIN_WATCHDOG, {})
                self._runtime.destroy(interp)
            os.close(slot.kill_r)
            os.close(out_fd)

    def _boot(self, slot: _InterpreterSlot, interp: Any, out_fd: int) -> bool:
        self._runtime.run(interp, _BOOT, {
            "inside": str(_INSIDE), "path": "\0".join(sys.path), "kill_fd": slot.kill_r,
            "setup": self._setup_blob, "out_fd": out_fd, "levels": self._levels_blob})
        failure = _read(out_fd)
        if not failure:
            return True
        error = _failure(pickle.loads(failure))
        if error.exc is not None and error.traceback:  # as a task's: where it raised there
            error.exc.__cause__ = RemoteTraceback(error.traceback)
        self._events.engine_broken(initializer_failed(
            self.setup, f"in sub-interpreter {slot.index}", error))
        return False

    def _run(self, slot: _InterpreterSlot, interp: Any, out_fd: int, work: ChunkWork
             ) -> ChunkReport:
        fn_blob = None
        if work.fn.id not in slot.functions:
            slot.functions.add(work.fn.id)
            fn_blob = work.fn.blob
        self._runtime.run(interp, _RUN, {
            "fn_id": work.fn.id, "fn_blob": fn_blob, "star": int(work.kind),
            "items": work.payload, "out_fd": out_fd})
        try:
            results, failures, seconds, error, _, logs = pickle.loads(_read(out_fd))
        except BaseException as exc:  # a result whose unpickling raises here (SystemExit too)
            return ChunkReport(work.id, [], error=_serialization_failure(
                f"the task's result could not be unpickled here, in the caller: "
                f"{type(exc).__name__}: {exc}", exc, "unpickle-result"), remote=True)
        self._relay(slot, work, logs)
        return ChunkReport(
            work.id, results, {at: _failure(f) for at, f in failures.items()}, seconds,
            _load_failure(*error) if error is not None else None, remote=True)

    def _relay(self, slot: _InterpreterSlot, work: ChunkWork,
               logs: list[tuple[int | None, dict[str, Any]]]) -> None:
        """Hand what the chunk's tasks logged to this process's handlers, each record
        naming its task, while the chunk still counts as running (see ``log_relay``)."""
        if not logs:
            return
        from ..log_relay import relay

        for position, fields in logs:
            relay(fields, slot.index, work.first, position)

    # ------------------------------------------------------------------ the interface

    def prepare(self, fn: Callable[..., Any], fn_id: int) -> FunctionRef:
        blob = pack_for_workers(fn, f"the function {fn!r}", in_band=True).data
        return FunctionRef(fn_id, fn, blob)

    def pack(self, items: Sequence[Any], describe: Callable[[int], str]) -> Any:
        return pack_items(items, describe, in_band=True).data


def _scratch_file() -> int:
    """A file for a sub-interpreter's answers (results can be larger than a pipe holds)."""
    create = getattr(os, "memfd_create", None)
    if create is not None:
        return int(create("corework-interpreter", os.MFD_CLOEXEC))
    with tempfile.TemporaryFile() as file:  # pragma: no cover - not Linux
        return os.dup(file.fileno())


def _read(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _serialization_failure(message: str, cause: BaseException | None,
                           stage: str) -> Failure:
    error = SerializationError(message, stage=stage, original=cause)
    error.__cause__ = cause
    return Failure(error, "SerializationError", message, "")


def _load_failure(what: str, plain: tuple[Any, ...]) -> Failure:
    """Why the sub-interpreter could not load a chunk's function or arguments."""
    failure = _failure(plain)
    if failure.type_name == "ImportError" and "sub-interpreter" in failure.message:
        return failure  # it says what to do already
    message = (f"the sub-interpreter could not unpickle the task's {what}: "
               f"{failure.type_name}: {failure.message}")
    return _serialization_failure(message, failure.exc, "unpickle-argument")


def _failure(plain: tuple[Any, ...]) -> Failure:
    """corework's Failure from the sub-interpreter's plain tuple, with a hint for modules
    that cannot load in sub-interpreters."""
    blob, type_name, message, formatted = plain
    exc: BaseException | None = None
    if blob is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(blob)
    found = _NO_SUBINTERPRETERS.search(message)
    if found:
        message = (f"module {found[1]} cannot be imported in a sub-interpreter (it does not "
                   "support them); run these tasks with engine='process' (or 'thread')")
        exc = ImportError(message)
        type_name = "ImportError"
    if exc is None and type_name == "SerializationError":  # made in there, as plain text
        exc = SerializationError(message, stage="pickle-result")
    if exc is not None:
        exc.__traceback__ = None
    return Failure(exc, type_name, message, formatted)
