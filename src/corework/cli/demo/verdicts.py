"""The lesson's claims, each judged from numbers: small pure functions, one per claim.

A speedup is judged against ``p``, the tasks that can really run at once here
(``min(workers, cores)``): work that runs in parallel reaches at least halfway from 1× to
``p``×; work that does not stays under 1 + 0.2 × (p - 1). With a single core neither can
be told apart, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLAIMS",
    "CONFIRMED",
    "NOT_CONFIRMED",
    "NOT_MEASURED",
    "Verdict",
    "free_threading",
    "gains",
    "interpreters_cpu",
    "no_gain",
    "processes_cpu",
    "processes_memory",
    "processes_start",
    "race",
    "threads_cpu",
    "threads_io",
    "threads_native",
]

CONFIRMED = "confirmed"
NOT_CONFIRMED = "not confirmed"
NOT_MEASURED = "not measured"
MEBIBYTE = 1024 * 1024
#: The lesson's claims, in its order, by the name of the function that judges each.
CLAIMS = {
    "threads_cpu": "threads: no effect on CPU-bound work",
    "processes_cpu": "processes: great for CPU-bound work",
    "threads_io": "threads: great for I/O-bound work",
    "processes_start": "processes: slower to start",
    "processes_memory": "processes: more memory",
    "race": "threads: careful with race conditions",
    "threads_native": "way out: native code that releases the GIL",
    "interpreters_cpu": "way out: sub-interpreters (a GIL each)",
    "free_threading": "way out: free-threaded Python (no GIL)",
}


@dataclass(frozen=True)
class Verdict:
    claim: str
    status: str  # CONFIRMED, NOT_CONFIRMED or NOT_MEASURED
    evidence: str


def gains(speedup: float, p: int) -> bool:
    """Parallel: at least halfway from 1× to ``p``×."""
    return speedup >= 1 + 0.5 * (p - 1)


def no_gain(speedup: float, p: int) -> bool:
    """Not parallel: under a fifth of the way from 1× to ``p``×."""
    return speedup < 1 + 0.2 * (p - 1)


def _judge(claim: str, holds: bool, evidence: str) -> Verdict:
    return Verdict(claim, CONFIRMED if holds else NOT_CONFIRMED, evidence)


def _one_core(claim: str, p: int) -> Verdict | None:
    if p >= 2:
        return None
    return Verdict(claim, NOT_MEASURED, "needs 2 or more workers on 2 or more cores")


def threads_cpu(speedup: float, p: int, gil: bool = True) -> Verdict:
    claim = CLAIMS["threads_cpu"]
    why = "one GIL" if gil else "this Python has no GIL"
    return _one_core(claim, p) or _judge(
        claim, no_gain(speedup, p), f"threads {speedup:.2f}× on cpu ({why})")


def processes_cpu(speedup: float, p: int) -> Verdict:
    claim = CLAIMS["processes_cpu"]
    return _one_core(claim, p) or _judge(
        claim, gains(speedup, p), f"processes {speedup:.2f}× on cpu, {p} at once")


def threads_io(threads: float, processes: float | None, tasks: int) -> Verdict:
    also = "" if processes is None else f", processes {processes:.1f}×"
    return _judge(CLAIMS["threads_io"], gains(threads, tasks),
                  f"{tasks} threads {threads:.1f}× on {tasks} waiting tasks{also}")


def processes_start(processes: float, threads: float) -> Verdict:
    """Pool creation to first result, in seconds: processes at least twice the threads'."""
    ratio = processes / threads if threads > 0 else float("inf")
    return _judge(CLAIMS["processes_start"], ratio >= 2,
                  f"pool to first result: processes {processes * 1e3:.1f} ms, "
                  f"threads {threads * 1e3:.1f} ms ({ratio:.0f}×)")


def processes_memory(processes: float, threads: float) -> Verdict:
    """Bytes per worker: processes at least 1 MiB and twice the threads' more."""
    holds = processes >= max(2 * threads, threads + MEBIBYTE)
    return _judge(CLAIMS["processes_memory"], holds,
                  f"per worker: processes {processes / MEBIBYTE:.1f} MiB, "
                  f"threads {threads / MEBIBYTE:.2f} MiB")


def threads_native(speedup: float | None, p: int, missing: str = "") -> Verdict:
    return _gains_verdict("threads_native", speedup, p, missing, "threads {:.2f}× on numpy matmul")


def interpreters_cpu(speedup: float | None, p: int, missing: str = "") -> Verdict:
    return _gains_verdict("interpreters_cpu", speedup, p, missing,
                          "sub-interpreters {:.2f}× on cpu")


def _gains_verdict(name: str, speedup: float | None, p: int, missing: str, figure: str
                   ) -> Verdict:
    """Claim ``name``: an engine gains on ``p`` cores (``figure`` shows its speedup)."""
    claim = CLAIMS[name]
    if speedup is None:
        return Verdict(claim, NOT_MEASURED, missing or "not run")
    return _one_core(claim, p) or _judge(claim, gains(speedup, p), figure.format(speedup))


def free_threading(speedup: float | None, p: int, python: str = "",
                   missing: str = "") -> Verdict:
    claim = CLAIMS["free_threading"]
    if speedup is None:
        return Verdict(claim, NOT_MEASURED, missing or "not run")
    where = f" on {python}" if python else ""
    return _one_core(claim, p) or _judge(
        claim, gains(speedup, p), f"threads {speedup:.2f}× on cpu{where}")


def race(expected: int, unlocked: int, locked: int) -> Verdict:
    """Threads lose updates without a lock, and none with one."""
    return _judge(CLAIMS["race"],
                  unlocked < expected and locked == expected,
                  f"{expected - unlocked:,} of {expected:,} increments lost without a lock, "
                  f"{expected - locked:,} with one")
