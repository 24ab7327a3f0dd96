"""One measurement in a fresh interpreter: ``python -m benchmarks.case WORKLOAD PEER PARAMS``.

Prints one JSON line: the measured seconds (``{"seconds": ...}``, plus ``"shutdown"`` for
the startup workload) or ``{"error": ...}``. Times are taken with ``time.perf_counter``
inside this process, so interpreter start and importing the library are not counted.
``python -m benchmarks.case --calibrate`` prints the machine-dependent task sizes and
numpy's BLAS instead.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

from .peers import PEERS, Peer
from .workloads import WORKLOADS, Params, Workload, blas_description, calibrate


def measure_startup(workload: Workload, peer: Peer, params: Params) -> tuple[dict[str, float],
                                                                                 list[Any]]:
    """Pool creation to the first result, then shutdown, each timed on its own."""
    fn, items = workload.job(params)
    start = time.perf_counter()
    pool = peer.open(workload.worker_count())
    results = peer.map(pool, fn, items)
    first = time.perf_counter()
    peer.close(pool)
    end = time.perf_counter()
    return {"seconds": first - start, "shutdown": end - first}, results


def measure_map(workload: Workload, peer: Peer, params: Params) -> tuple[dict[str, float],
                                                                             list[Any]]:
    """One map on a pool that has already run a small warm-up map."""
    fn, items = workload.job(params)
    pool = peer.open(workload.worker_count())
    try:
        peer.map(pool, *workload.warm())
        start = time.perf_counter()
        results = peer.map(pool, fn, items)
        seconds = time.perf_counter() - start
    finally:
        peer.close(pool)
    return {"seconds": seconds}, results


def run(workload_name: str, peer_name: str, params: Params) -> dict[str, float]:
    """Measure one case; raises if the library returned wrong results."""
    workload, peer = WORKLOADS[workload_name], PEERS[peer_name]()
    if peer.module:
        importlib.import_module(peer.module)
    measure = measure_startup if workload.startup else measure_map
    metrics, results = measure(workload, peer, params)
    if not workload.check(params, results):
        raise AssertionError(f"wrong results: {str(results)[:200]}")
    return metrics


def main(argv: list[str]) -> int:
    if argv == ["--calibrate"]:
        print(json.dumps({"params": calibrate(), "blas": blas_description()}), flush=True)
        return 0
    workload_name, peer_name, params = argv
    try:
        metrics: dict[str, Any] = run(workload_name, peer_name, json.loads(params))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
