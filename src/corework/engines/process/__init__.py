"""The process engine: worker processes, forked by a small single-threaded launcher.

Modules, from the caller's side down to the worker's:

* ``engine`` — :class:`ProcessEngine`, the sending half (the scheduler's calls);
* ``reader`` — the reader thread, the receiving half (results, deaths, logs);
* ``handle`` — a worker as the caller sees it (its socket, pid, death);
* ``launcher`` — the caller's client of the launcher process, and ``launcher_loop``,
  the launcher itself; ``present`` and ``warmup``, what each worker start carries;
* ``worker`` — the loop inside each worker process; ``probe``, its GIL and CPU probes;
* ``platform`` — the operating-system calls they need.
"""

from .engine import START_METHODS, ProcessEngine

__all__ = ["START_METHODS", "ProcessEngine"]
