"""The Dask cluster a pool runs on, and its client: the pool's own LocalCluster (secured
with throw-away TLS credentials: no other user of the machine gets in), the one at
``address`` (or Dask's configured ``scheduler-address``), or — for a task that itself uses
corework — the cluster that task runs on."""

from __future__ import annotations

import contextlib
from typing import Any

from ..._errors import CoreworkError

__all__ = ["CONNECT_SECONDS", "WORKERS_WAIT_SECONDS", "Cluster", "distributed_module"]

#: How long a pool given no ``workers`` waits for the scheduler to have a worker (its
#: thread count sizes the pool).
WORKERS_WAIT_SECONDS = 60.0
#: How long a client may take to reach a scheduler before the pool says it cannot.
CONNECT_SECONDS = 10.0

_INSTALL = "engine='dask' needs Dask's distributed package: pip install 'corework[dask]'"


def distributed_module() -> Any:
    """The ``distributed`` module, imported on first use (corework does not need it)."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return distributed


class Cluster:
    """One pool's Dask client (``client``) and, if it started one, its own LocalCluster
    (``own``); see the module docstring."""

    def __init__(self) -> None:
        self.client: Any = None
        self.own: Any = None  # the LocalCluster this pool started, if any
        self.address: str | None = None  # its scheduler's

    def connect(self, address: str | None, workers: int) -> None:
        """Reach the cluster at ``address`` or the configured one, else start the pool's
        own with ``workers`` worker processes. ConnectionError, in a line, if none
        answers."""
        import dask

        distributed = distributed_module()
        address = address or dask.config.get("scheduler-address", None)
        security = None  # the user's cluster: Dask's own configuration (distributed.comm.tls)
        if address is None and _in_dask_task(distributed):
            # A task using corework: run on its own cluster, and let its worker run other
            # tasks while this one's thread waits for results (as worker_client() does).
            worker = distributed.get_worker()
            address, security = worker.scheduler.address, worker.security
            distributed.secede()
        if address is None:
            security = _private_security()
            # No dashboard; the scheduler's HTTP server (it has one anyway) on a free
            # port, not 8787, which another Dask scheduler here may have taken.
            self.own = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None, security=security,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            address = self.own.scheduler_address
        self.address = address
        try:
            _reachable(address)
            self.client = distributed.Client(address, set_as_default=False,
                                             security=security, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {address} within {CONNECT_SECONDS:g} s "
                f"({type(exc).__name__}: {exc}): start one with `dask scheduler` and workers "
                f"with `dask worker {address}`, or check the address") from None

    def threads(self) -> int:
        """The cluster's task threads, once it has a worker (bounded wait)."""
        address = self.address
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_WAIT_SECONDS)
        except TimeoutError:
            raise CoreworkError(
                f"no Dask worker joined the scheduler at {address} within "
                f"{WORKERS_WAIT_SECONDS:g} s: start some with `dask worker {address}`, or "
                "pass workers=N to queue work until they come") from None
        return max(1, int(sum(self.client.nthreads().values())))

    def keep_whole(self, workers: int) -> None:
        """Start again the workers that the pool's own LocalCluster gave up on.

        A LocalCluster closes a worker's nanny for good when, ``distributed.deploy.
        lost-worker-timeout`` (15 s) after that worker left, no worker of its name is
        there: so when a worker is ended again just then (a timeout 15 s after another)
        it is not replaced, and a cluster of one worker is left with none."""
        own = self.own
        if own is not None and len(own.workers) < workers:
            with contextlib.suppress(Exception):  # closing: nothing to keep
                own.scale(workers)

    def close(self) -> None:
        """Close the client, then the pool's own cluster (its worker processes end)."""
        if self.client is not None:
            self.client.close()
        if self.own is not None:
            self.own.close()


def _private_security() -> Any:
    """TLS with throw-away credentials, known to this process and the cluster it starts
    alone: no other user of the machine can connect to its scheduler or workers (which
    would run code as this user, in this process)."""
    from distributed.security import Security

    try:
        return Security.temporary()  # type: ignore[no-untyped-call]
    except ImportError:
        raise ImportError(
            "engine='dask' without address= starts a private cluster secured with TLS, "
            "which needs the cryptography package: pip install 'corework[dask]'") from None


def _reachable(address: str) -> None:
    """Raise OSError unless something listens at a tcp:// or tls:// ``address`` (found
    before a Client is made: a Client that fails leaves its event loop's thread behind)."""
    import socket

    scheme, _, rest = address.rpartition("://")
    if scheme not in ("tcp", "tls", ""):
        return  # another transport (inproc, ucx): the Client finds out
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return
    socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                             timeout=CONNECT_SECONDS).close()


def _in_dask_task(distributed: Any) -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True
