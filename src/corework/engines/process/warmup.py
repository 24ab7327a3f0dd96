"""Warm workers: the launcher imports the libraries the caller has imported, once.

Why: a worker forked from the launcher has what the launcher imported; a caller that uses
numpy or scikit-learn would otherwise pay their imports again in every worker of every
pool (seconds, where a fork costs milliseconds). The caller tells the launcher the modules
it has loaded from installed libraries (:class:`Imports`: the standard library and
site-packages; never the user's own files, whose imports may do things); the launcher
imports them between requests, one at a time (:class:`Warmer`), so no worker start waits
for more than one module's import.

The launcher must stay single-threaded to fork safely: native thread pools (BLAS, OpenMP)
are held at one thread while a library loads (workers get their counts back, see
``worker``), each import is bounded in time, and a module that starts a thread anyway
stops the warming: the launcher then executes fresh interpreters instead of forking (see
``launcher``). A module that fails to import is skipped and named in a debug log.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator

#: Environment variables that size native thread pools when their library loads.
NATIVE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)
#: The longest one module's import may take in the launcher before it is given up.
IMPORT_SECONDS = 20.0
#: Modules never imported by the launcher: the caller's script, and corework (loaded).
_NEVER = ("__main__", "__mp_main__", "corework", "__editable__")


class Imports:
    """The caller's side: which of its modules the launcher has not been told of yet."""

    #: Top-level packages no launcher imports again (one gave a launcher a thread).
    _left_out: set[str] = set()  # noqa: RUF012 - shared by every launcher of the process

    def __init__(self, seen: set[str] | None = None) -> None:
        self._seen = seen if seen is not None else set()
        self._roots: tuple[str, ...] | None = None

    @classmethod
    def loaded(cls) -> Imports:
        """For a launcher forked now: it has every module this process has loaded."""
        return cls(set(sys.modules))

    @classmethod
    def never(cls, name: str) -> None:
        """Leave ``name``'s top-level package out of every later launcher's warm-up."""
        cls._left_out.add(name.partition(".")[0])

    def new(self) -> list[str]:
        """Modules from installed libraries loaded since the last call, in load order."""
        roots = self._roots = self._roots or _library_roots()
        fresh = []
        for name, module in list(sys.modules.items()):
            if name in self._seen:
                continue
            self._seen.add(name)
            origin = getattr(getattr(module, "__spec__", None), "origin", None)
            if isinstance(origin, str) and origin.startswith(roots) \
                    and not name.startswith(_NEVER) \
                    and name.partition(".")[0] not in self._left_out:
                fresh.append(name)
        return fresh


def _library_roots() -> tuple[str, ...]:
    """Where installed libraries live: the standard library (where ``os`` is) and
    site-packages (asked of ``site``, loaded already: sysconfig would cost a first pool
    a millisecond or two)."""
    roots = {os.path.dirname(os.__file__)}
    with contextlib.suppress(Exception):
        import site

        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots if root) + \
        tuple(os.path.join(root, "") for root in roots if root)


class _TookTooLong(Exception):
    pass


class Warmer:
    """The launcher's side: modules to import, one per :meth:`step`."""

    #: Set in a launcher that imported something with native pools held at one thread
    #: (and so in every worker it forks: they size the pools again, see ``worker``).
    held_native_pools = False

    def __init__(self) -> None:
        self._queue: collections.deque[str] = collections.deque()
        self.skipped: list[str] = []
        self.imported = 0
        #: The module after whose import the launcher had threads (it forks no more).
        self.tainted_by: str | None = None

    def add(self, names: list[str]) -> None:
        if self.tainted_by is None:
            self._queue.extend(names)

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def step(self) -> None:
        """Import the next module not loaded yet."""
        while self._queue:
            name = self._queue.popleft()
            if name not in sys.modules:
                break
        else:
            return
        before = set(sys.modules)
        try:
            with _native_pools_at_one(), _bounded(IMPORT_SECONDS), _signals_kept():
                importlib.import_module(name)
            self.imported += 1
        except BaseException as exc:  # any failure of the library's own: skipped
            self.skipped.append(f"{name} ({type(exc).__name__}: {exc})"[:200])
            if isinstance(exc, _TookTooLong) or _loaded_native(before):
                # cut short, or half-loaded with a C extension that cannot load twice:
                # workers forked from here would inherit the half, so no more are
                self._taint(name)
                return
        Warmer.held_native_pools = True
        from .platform import is_single_threaded  # here: the caller's side needs no ctypes

        if not is_single_threaded():
            self._taint(name)

    def _taint(self, name: str) -> None:
        self.tainted_by = name
        self._queue.clear()


def _loaded_native(before: set[str]) -> bool:
    """Whether a C extension module was loaded since ``before`` (a set of module names)."""
    for name in set(sys.modules) - before:
        origin = getattr(getattr(sys.modules.get(name), "__spec__", None), "origin", None)
        if isinstance(origin, str) and origin.endswith((".so", ".pyd")):
            return True
    return False


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """Undo what an imported module did to the launcher's signal handlers and wake-up
    descriptor (the launcher reaps its workers on SIGCHLD through them)."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGCHLD, signal.SIGINT,
                                                                 signal.SIGTERM)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    try:
        yield
    finally:
        for number, handler in handlers.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(number, handler)
        with contextlib.suppress(OSError, ValueError):
            signal.set_wakeup_fd(wakeup)


@contextlib.contextmanager
def _native_pools_at_one() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in NATIVE_THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(NATIVE_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    """Raise in the import that runs longer than ``seconds`` (the launcher's main thread)."""
    def expire(*_: object) -> None:
        raise _TookTooLong(f"took over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
