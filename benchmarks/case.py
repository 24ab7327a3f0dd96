"""One measurement in a fresh interpreter: ``python -m benchmarks.case WORKLOAD PEER PARAMS``.

Prints one JSON line: the measured seconds (``{"seconds": ...}``, plus ``"shutdown"`` for
the startup workload, and the tree's extra peak memory for a workload with shared data)
or ``{"error": ...}``. A fault workload (crash, timeout) prints what
the caller got as soon as it has it, and again with the time once the pool is shut down:
the runner reads the first line if the shutdown hangs. Times are taken with
``time.perf_counter`` inside this process, so interpreter start and importing the library
are not counted.
``python -m benchmarks.case --calibrate`` prints the machine-dependent task sizes and
numpy's BLAS instead; ``--blas`` only the latter.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import time
from typing import Any

from .peers import PEERS, Peer
from .workloads import WORKLOADS, Params, Workload, blas_description, calibrate, crash_stamp


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
    """One map on a pool that has already run a small warm-up map; for a cold peer
    (a whole ``cw.map`` call), that call, with the workload's module imported here first."""
    fn, items = workload.job(params)
    if peer.cold:
        if workload.warm_module:
            importlib.import_module(workload.warm_module)
        pool = peer.open(workload.worker_count())
        start = time.perf_counter()
        results = peer.map(pool, fn, items)
        seconds = time.perf_counter() - start
        peer.close(pool)
        return {"seconds": seconds, **peer.facts(fn)}, results
    pool = peer.open(workload.worker_count())
    try:
        peer.map(pool, *workload.warm())
        start = time.perf_counter()
        results = peer.map(pool, fn, items)
        seconds = time.perf_counter() - start
    finally:
        peer.close(pool)
    return {"seconds": seconds}, results


def measure_shared(workload: Workload, peer: Peer, params: Params) -> tuple[dict[str, Any],
                                                                               list[Any]]:
    """Two maps of ``fn(data, x)``, ``data`` made first, each on a fresh pool that has run
    a small warm-up map: one timed, then one with the process tree's memory sampled (the
    sampler takes CPU from the map: 30-50% more wall time on two cores), reported as peaks
    over the baseline taken just before the map."""
    from .memory import TreeMemory

    fn, items = workload.job(params)
    data = peer.adopt(workload.data(params))  # type: ignore[misc]
    results, metrics = [], {}
    for memory in (None, TreeMemory()):
        pool = peer.open_shared(workload.worker_count(), data)
        try:
            peer.map(pool, *workload.warm())
            with memory or contextlib.nullcontext():
                start = time.perf_counter()
                results.append(peer.map_shared(pool, fn, data, items))
                seconds = time.perf_counter() - start
        finally:
            peer.close(pool)
        metrics.update(memory.extra() if memory else {"seconds": seconds})
    if results[0] != results[1]:
        raise AssertionError(f"the two maps differ: {str(results)[:200]}")
    return metrics, results[0]


def measure_fault(workload: Workload, peer: Peer, params: Params, bad: int) -> dict[str, Any]:
    """One outcome per task on a warm pool: the seconds until every outcome is known and
    the pool is shut down, how many of the other tasks returned their input, and what the
    bad task gave; for a crash, also how long after it the library reported it. A cold
    peer (a whole ``cw.map`` call) gets no warm-up: its pool starts inside the timed part."""
    fn, items = workload.job(params)
    stamp = crash_stamp()
    stamp.unlink(missing_ok=True)
    pool = peer.open(workload.worker_count())
    try:
        if not peer.cold:
            peer.map(pool, *workload.warm())
        start = time.perf_counter()
        outcomes = peer.outcomes(pool, fn, items)
        known = time.perf_counter() - start
        ok = [o.error is None and o.value == x for x, o in zip(items, outcomes, strict=True)]
        error = outcomes[bad].error
        metrics: dict[str, Any] = {
            "outcomes": known, "delivered": sum(ok) - ok[bad],
            "bad": type(error).__name__ if error else f"returned {outcomes[bad].value!r}"[:40],
        }
        if stamp.exists():
            metrics["reported"] = outcomes[bad].at - float(stamp.read_text(encoding="utf-8"))
            stamp.unlink()
        print(json.dumps(metrics), flush=True)  # in case the shutdown hangs
    finally:
        peer.close(pool)
    return {**metrics, "seconds": time.perf_counter() - start}


def run(workload_name: str, peer_name: str, params: Params) -> dict[str, Any]:
    """Measure one case; raises if the library returned wrong results."""
    workload = WORKLOADS[workload_name]
    peer = PEERS[peer_name](task_timeout=workload.task_timeout)
    if peer.module:
        importlib.import_module(peer.module)
    if workload.bad is not None:
        return measure_fault(workload, peer, params, workload.bad)
    measure = (measure_startup if workload.startup else
               measure_shared if workload.data is not None else measure_map)
    metrics, results = measure(workload, peer, params)
    if not workload.check(params, results):
        raise AssertionError(f"wrong results: {str(results)[:200]}")
    return metrics


def main(argv: list[str]) -> int:
    if argv == ["--calibrate"]:
        print(json.dumps({"params": calibrate(), "blas": blas_description()}), flush=True)
        return 0
    if argv == ["--blas"]:
        print(json.dumps({"blas": blas_description()}), flush=True)
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
