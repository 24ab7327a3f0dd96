"""The benchmark runner: every repeat of every case in a fresh process with a hard limit.

A case that fails or runs past its workload's limit is reported as "error" or "timeout";
its whole process group (the pool's workers too) is killed, so nothing it leaves behind
can slow down the cases after it.

The warm workloads (pools made before the timed part) come first; the pseudo-workload
``cold`` (in ``--workloads``, last by default) then times whole scripts from process start,
import included, row by row (``--rows``; see :mod:`benchmarks.cold`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import cold
from .peers import PEERS, missing
from .report import (
    CaseResult,
    Results,
    auto_table,
    git_revision,
    machine,
    markdown,
    summary_table,
    workload_table,
)
from .workloads import WORKLOADS, crash_stamp

ROOT = Path(__file__).resolve().parent.parent  # so that `benchmarks` imports in workers


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid``, if anything is left in it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _last_json(out: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None
    return result


def run_case_process(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.case *args`` in a new session; return its last JSON line,
    or ``{"timeout": ..., "partial": <its last JSON line, if any>}`` / ``{"error": ...}``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.case", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        partial = _last_json(proc.communicate()[0])
        return {"timeout": f"killed at {timeout:g} s", **({"partial": partial} if partial else {})}
    finally:
        _kill_group(proc.pid)  # workers the case left behind
        crash_stamp(proc.pid).unlink(missing_ok=True)  # if the crash case was killed
    result = _last_json(out)
    if result is None:
        tail = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail[:300]}
    return result


def run_workload(workload: str, peers: list[str], params: dict[str, int],
                 repeats: int) -> dict[str, CaseResult]:
    """Every repeat of every peer's case, round-robin: a burst of load from elsewhere on
    the machine then hits all peers alike, not just the one that happened to be running.

    A case stops at its first failure, and once its repeats have taken the workload's
    ``budget`` (a case that slow is far from winning; its spread says more than more
    samples would). Either way it gets a note, which is what takes it out of the rounds.
    """
    spec = WORKLOADS[workload]
    why_not = {p: missing(p) or spec.excluded.get(p, "") for p in peers}
    cases = {p: CaseResult(status="skipped", note=why_not[p]) if why_not[p] else CaseResult()
             for p in peers}
    spent = dict.fromkeys(peers, 0.0)
    for _ in range(repeats):
        for peer in [p for p, case in cases.items() if not case.note]:
            start = time.perf_counter()
            result = run_case_process([workload, peer, json.dumps(params)], spec.timeout)
            spent[peer] += time.perf_counter() - start
            _record(cases[peer], result, spent[peer] > spec.budget, repeats)
    return cases


def _record(case: CaseResult, result: dict[str, Any], over_budget: bool, repeats: int) -> None:
    failure = next((s for s in ("timeout", "error") if s in result), None)
    if failure:
        case.status, case.note = failure, str(result[failure])
        if "partial" in result:  # what a fault case got before its shutdown hung
            case.samples.append(result["partial"])
        return
    case.samples.append(result)
    if over_budget and len(case.samples) < repeats:
        case.note = f"{len(case.samples)} of {repeats} repeats (time budget)"


def calibrate(params: dict[str, int] | None = None) -> tuple[dict[str, int], str]:
    """Task sizes for this machine (unless given) and numpy's BLAS, measured once, in a
    fresh process."""
    result = run_case_process(["--blas" if params else "--calibrate"], 120.0)
    if "blas" not in result:
        raise SystemExit(f"calibration failed: {result}")
    return params or result["params"], result["blas"]


def _names(value: str, known: dict[str, Any]) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}; "
                                         f"choose from {', '.join(known)}")
    return names


def _params(value: str) -> dict[str, int]:
    try:
        params = {k.strip(): int(v) for k, v in (p.split("=") for p in value.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError("expected NAME=INT,NAME=INT") from None
    if set(params) != {"cpu_loops", "svd_size"}:
        raise argparse.ArgumentTypeError("give cpu_loops and svd_size")
    return params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    workloads = {**WORKLOADS, "cold": None}
    parser.add_argument("--workloads", type=lambda v: _names(v, workloads),
                        default=list(workloads),
                        help=f"comma-separated ({','.join(workloads)}); cold: the cold tables")
    parser.add_argument("--rows", type=lambda v: _names(v, cold.ROWS), default=list(cold.ROWS),
                        help=f"the cold tables' rows, comma-separated ({','.join(cold.ROWS)})")
    parser.add_argument("--libs", type=lambda v: _names(v, PEERS), default=list(PEERS),
                        help=f"comma-separated ({','.join(PEERS)}); the cold tables take "
                             f"{','.join(cold.LABELS)}")
    parser.add_argument("--params", type=_params, default=None,
                        help="task sizes instead of calibrating, e.g. cpu_loops=5670383,"
                             "svd_size=660 (to rerun some rows with the sizes of a run)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per case (5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one repeat")
    parser.add_argument("--save", type=Path, help="write results to FILE (.json or markdown)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    began = time.monotonic()
    params, blas = calibrate(args.params)
    info, revision = machine(args.libs, blas), git_revision()  # corework as it was at the start
    print(f"calibration: {params}", file=sys.stderr)
    results: Results = {}
    loads: dict[str, float] = {}
    for workload in [w for w in args.workloads if w != "cold"]:
        loads[workload] = os.getloadavg()[0]
        print(f"{workload}: load average {loads[workload]:.2f}", file=sys.stderr, flush=True)
        peers = [p for p in args.libs
                 if WORKLOADS[workload].applies(p, PEERS[p].data_only, PEERS[p].only)]
        results[workload] = run_workload(workload, peers, params, args.repeats)
        for peer, case in results[workload].items():
            shown = f"{case.median():.4f} s" if case.median() is not None else case.status
            print(f"  {workload:8} {peer:17} {shown} {case.note}", file=sys.stderr, flush=True)
        print(workload_table(workload, results[workload]) + "\n", flush=True)
    for table in (summary_table(results), auto_table(results)):
        if table:
            print(table + "\n", flush=True)
    cold_results: cold.ColdResults = {}
    if "cold" in args.workloads:
        libs = [lib for lib in args.libs if lib in cold.LABELS]
        cold_results = cold.run_cold(args.rows, libs, params, args.repeats, loads)
        for table in cold.tables(cold_results):
            print(table + "\n", flush=True)
    loads["end"] = os.getloadavg()[0]
    info["load average (1 min) before each table"] = ", ".join(
        f"{name} {load:.2f}" for name, load in loads.items())
    minutes = (time.monotonic() - began) / 60
    info["run took"] = f"{minutes:.1f} min"
    print(f"the run took {minutes:.1f} min; load average now {loads['end']:.2f}",
          file=sys.stderr)
    if args.save:
        if "corework" in info and git_revision() != revision:
            info["corework"] += f"; src/ changed during the run, now {git_revision()}"
        save(args.save, results, cold_results, info, params, command, args.repeats)
        print(f"\nsaved to {args.save}", file=sys.stderr)
    return 0


def save(path: Path, results: Results, cold_results: cold.ColdResults, info: dict[str, str],
         params: dict[str, int], command: str, repeats: int) -> None:
    """Write the results as JSON (a ``.json`` path) or as the markdown report."""
    if path.suffix == ".json":
        data = {"command": command, "machine": info, "params": params, "repeats": repeats,
                "results": {w: {p: vars(c) for p, c in cases.items()}
                            for w, cases in results.items()},
                "cold": {r: {p: vars(c) for p, c in cases.items()}
                         for r, cases in cold_results.items()}}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    else:
        text = markdown(results, info, params, command, repeats)
        extra = "\n\n".join(cold.tables(cold_results))
        path.write_text(text + (f"\n{extra}\n" if extra else ""), encoding="utf-8")
