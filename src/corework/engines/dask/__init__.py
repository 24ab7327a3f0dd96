"""The dask engine: the same API on a Dask ``distributed`` cluster.

::

    scheduler ── send(slot, chunk) ──▶ client.submit(_run, ...) ──▶ Dask scheduler ──▶ a worker
        ▲                              (one Dask task per chunk)                          │
        └── chunk_done / worker_lost ◀── done callback (Dask's callback thread) ◀─────────┘

Each slot is a *lane*: at most one Dask future in flight, running one whole chunk with
:func:`~corework.engines.runner.run_chunk`. So corework's scheduler keeps doing what it
does on every engine — chunking, ordering, deadlines, retries — and Dask does what it is
good at: placing tasks on workers, moving data, restarting workers, its dashboard.
``workers`` is the number of lanes (default: the cluster's threads when the pool starts).

How corework's promises map onto Dask (the README's "On a cluster" says the same):

* **Worker loss** (a worker process dies): Dask itself re-runs the task elsewhere,
  transparently; that is the cluster's own retry and corework does not count it. A task
  that keeps killing workers (``distributed.scheduler.allowed-failures`` + 1 deaths)
  reaches corework as ``WorkerCrashed``; from then on corework's ``retries`` apply (a
  chunk is split to find the task to blame, as on the process engine). Dask's own
  ``retries=`` (re-run on an exception) is not used: corework's ``retries``/``retry_on``
  are.
* **Timeouts and Future.kill()**: Dask cannot interrupt a running Python function, but
  its nanny replaces a worker process that ends. In the background the task is
  cancelled, every worker is told never to start it, and the worker process running it
  is ended (its nanny starts a new one); the lane is ready again once that worker is
  back. Dask re-runs elsewhere whatever else that worker held, as for any lost worker,
  but never the stopped task (see ``Halts._stop_tasks``). A worker without a
  nanny (``dask worker --no-nanny``) is not ended: the task then runs on there until it
  finishes, and a warning is logged. A task's timeout counts from when corework hands it
  to Dask, so on a busy shared cluster it includes the time the task waits for a worker
  thread.
* **Arguments**: Dask pickles task arguments into the task graph, which goes through the
  scheduler. Buffers of 1 MiB or more (numpy arrays, bytes in memoryviews) are scattered
  to the workers instead, straight from the caller, and the task refers to them; a
  ``cw.share`` is scattered once per pool with ``broadcast=True`` (cached by share id, and
  dropped when the caller lets go of it), whatever its size, and reaches tasks read-only.
  A writable share cannot work across machines (tasks would write into their own copy)
  and is refused with a clear error.
* **initializer**: runs in a worker process before the first chunk of this pool that
  process runs (so also in workers that join later or were restarted); it travels once,
  scattered. If it raises, the pool is broken with ``InitializerFailed``.
* **Not supported**: ``memory_limit`` (Dask workers have their own: ``dask worker
  --memory-limit``), ``max_tasks_per_worker`` and ``start_method``: a clear ``ValueError``.
  ``native_threads`` is left to Dask, whose nanny already sets ``OMP_NUM_THREADS=1``.

Workers must be able to import corework (and whatever the task functions import), as for
any Dask library. A task that itself uses ``engine="dask"`` runs on its own worker's
cluster, and secedes from the worker's thread pool while it waits (as
``distributed.worker_client()`` does). Without ``address`` (and with no Dask
``scheduler-address`` configured, e.g. ``DASK_SCHEDULER_ADDRESS``) the engine starts a
``LocalCluster`` of ``workers`` single-threaded worker processes on 127.0.0.1 and closes
it at shutdown; Dask starts its workers with ``spawn``, so a script needs the usual
``if __name__ == "__main__":``.
"""

from .engine import DaskEngine, check_options

__all__ = ["DaskEngine", "check_options"]
