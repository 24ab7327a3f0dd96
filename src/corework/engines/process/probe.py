"""The probe of ``engine="auto"``: how a chunk's tasks use the GIL, watched from a second
thread of the worker that runs them (how late its wake-ups come, and how much the task's
thread wanted a core), so the caller can choose threads or processes from figures."""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["probe_gil", "schedstat"]

#: While probing, the GIL is handed over only this often: a task that holds it delays
#: the probe's wake-ups by about this much, far more than a busy machine ever does.
PROBE_SWITCH_SECONDS = 0.01
#: The probe's sleeps between wake-ups.
PROBE_SLEEP = 0.001
#: Enough wake-ups to call the GIL free (each on time) or held (each late).
PROBE_FREE_SAMPLES = 10
PROBE_HELD_SAMPLES = 2
#: A free GIL is decided no sooner than this: how much of the time the task wanted a core
#: (waiting, or native code) needs more than a few wake-ups' worth (a numpy task's first
#: 19 ms, paging its library in, looked like waiting).
PROBE_FREE_SECONDS = 0.04


def probe_gil(seconds: float, finished: threading.Event, task: int | None, *,
              early: bool = True) -> dict[str, float]:
    """Watch the GIL while a chunk runs on thread ``task`` (its kernel id), for up to
    ``seconds``.

    This thread sleeps 1 ms again and again and notes how late it wakes up. Waking up
    means taking the GIL back: if the task runs Python code, it holds the GIL and hands
    it over only every switch interval (raised to PROBE_SWITCH_SECONDS meanwhile), so
    each wake-up is about that late; if the task waits or runs native code that released
    the GIL, wake-ups are on time, whatever else the machine is doing. How much of the
    time the task's thread wanted a core (ran, or waited for one: the kernel's schedstat)
    tells waiting from native code, on a busy machine too. ``late_share``: the share of
    wake-ups that came half a switch interval late or more. Without ``early``, it watches
    the whole ``seconds`` (or the chunk): on a busy machine a task that holds the GIL
    may be off its core for a while, the GIL free meanwhile, so a few wake-ups decide
    nothing.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(PROBE_SWITCH_SECONDS)
    started, cpu, wanted = time.perf_counter(), time.process_time(), _wanted(task)
    delays: list[float] = []
    try:
        while (not finished.is_set() and time.perf_counter() - started < seconds
               and not (early and _decided(delays, time.perf_counter() - started))):
            asleep = time.perf_counter()
            time.sleep(PROBE_SLEEP)
            delays.append(time.perf_counter() - asleep - PROBE_SLEEP)
    finally:
        sys.setswitchinterval(interval)
    wall = time.perf_counter() - started
    cpu_share = (time.process_time() - cpu) / wall if wall else 1.0
    now = _wanted(task)
    busy = (now - wanted) / wall if now is not None and wanted is not None and wall else None
    return {"samples": float(len(delays)),
            "delay": _median(delays) if delays else 0.0,
            "switch": PROBE_SWITCH_SECONDS, "cpu_share": cpu_share,
            "busy": min(1.0, cpu_share if busy is None else busy),
            "late_share": (sum(delay >= PROBE_SWITCH_SECONDS / 2 for delay in delays)
                           / len(delays)) if delays else 0.0,
            "wall": wall, "ended": float(finished.is_set())}


def _wanted(thread: int | None) -> float | None:
    """Seconds thread ``thread`` has run or waited to run (Linux schedstat), or None."""
    found = schedstat(thread)
    return None if found is None else found[0] + found[1]


def schedstat(thread: int | None) -> tuple[float, float] | None:
    """(seconds run on a core, seconds waited for one) of thread ``thread`` (its kernel
    id) so far, from Linux's schedstat; None where there is none."""
    if thread is None:
        return None
    try:
        with open(f"/proc/self/task/{thread}/schedstat") as stat:
            ran, waited = stat.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def _decided(delays: list[float], elapsed: float) -> bool:
    """Whether the wake-ups so far already tell held from free beyond doubt (free: once
    the share of time the task wanted a core has been watched long enough too)."""
    if len(delays) >= PROBE_HELD_SAMPLES and min(delays) >= PROBE_SWITCH_SECONDS / 2:
        return True
    return (len(delays) >= PROBE_FREE_SAMPLES and elapsed >= PROBE_FREE_SECONDS
            and _median(delays) < PROBE_SWITCH_SECONDS / 8)


def _median(values: list[float]) -> float:
    """``statistics.median`` (a costly import for the caller and every worker)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
