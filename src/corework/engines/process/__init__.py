"""The process engine: worker processes, forked by a small single-threaded launcher.

Modules, from the caller's side down to the worker's:

* ``engine`` — :class:`ProcessEngine`, the sending half (the scheduler's calls);
* ``reader`` — the reader thread, the receiving half (results, deaths, logs);
* ``handle`` — a worker as the caller sees it (its socket, pid, death);
* ``launcher`` — the caller's client of the launcher process, and ``launcher_loop``,
  the launcher itself; ``present`` and ``warmup``, what each worker start carries;
* ``worker`` — the loop inside each worker process; ``probe``, its GIL and CPU probes;
* ``platform`` — the operating-system calls they need.

Nothing is imported here: what a thread pool needs of this package (the native thread
variables of ``warmup``) loads none of the rest.
"""
