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

import sys

from ._process import ProcessPoolExecutor
from ._thread import ThreadPoolExecutor

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor"]
if sys.version_info >= (3, 12):
    from ._interpreter import InterpreterPoolExecutor

    __all__ += ["InterpreterPoolExecutor"]
