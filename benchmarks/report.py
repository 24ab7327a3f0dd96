"""Results as markdown tables (printed and saved alike), and the machine they came from."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .peers import PEERS, version
from .workloads import WORKLOADS, Workload

#: The corework variants, compared against the best of the other peers.
COREWORK = ("corework-process", "corework-thread", "corework-interpreter", "corework-share",
            "corework-empty")
#: Whole ``cw.map`` calls: engine="auto" against the engines a user could pick by hand.
AUTO, BY_HAND = "corework-auto", ("corework-map-process", "corework-map-thread")
#: Not "other peers" in the summary: every corework variant.
OURS = tuple(name for name in PEERS if name.startswith("corework"))
#: The issue's targets for auto: its time over the best hand-picked engine's, at most.
AUTO_TARGETS = {"cpu": 1.10, "numpy": 1.05, "io": 1.05}


@dataclass
class CaseResult:
    """The repeats of one (workload, peer) case."""

    samples: list[dict[str, Any]] = field(default_factory=list)  # seconds and other metrics
    status: str = "ok"  # "ok", "timeout", "error" or "skipped"
    note: str = ""

    def median(self, metric: str = "seconds") -> float | None:
        if self.status != "ok" or not self.samples:
            return None
        return float(statistics.median(s[metric] for s in self.samples))

    def spread(self, metric: str = "seconds") -> str:
        if self.status != "ok" or not self.samples:
            return ""
        values = [s[metric] for s in self.samples]
        return f"{_number(metric, min(values))}–{_number(metric, max(values))}"


#: results[workload][peer]
Results = dict[str, dict[str, CaseResult]]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def git_revision() -> str:
    """The commit corework was measured at, flagging uncommitted changes under src/."""
    dirty = _git("status", "--porcelain", "--", "src")
    return _git("rev-parse", "--short", "HEAD") + (" + uncommitted src/ changes" if dirty else "")


def machine(peers: list[str], blas: str) -> dict[str, str]:
    """What the numbers were measured on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info = {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} (usable by this process: {usable})",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "numpy BLAS": blas,
    }
    for name in peers:
        requires = PEERS[name].requires
        if requires:
            info[requires] = version(name)
    if "corework" in info:
        info["corework"] += f" (git {git_revision()})"
    return info


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
                     for line in lines)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _number(metric: str, value: float | None) -> str:
    """Seconds to 0.1 ms, megabytes to 1 MB."""
    if value is None:
        return ""
    return f"{value:.0f}" if metric.endswith("_mb") else _seconds(value)


def _efficiency(serial: float | None, time: float | None, workers: int) -> str:
    """Speedup over the serial loop per worker: 1.00 is perfect scaling."""
    if serial is None or time is None:
        return ""
    return f"{serial / (time * workers):.2f}"


def _metrics(workload: str) -> list[tuple[str, str]]:
    if WORKLOADS[workload].startup:
        return [("seconds", "first result s"), ("shutdown", "shutdown s")]
    if WORKLOADS[workload].data is not None:
        return [("seconds", "median s"), ("extra_mb", "extra peak MB"),
                ("pss_mb", "PSS extra MB")]
    return [("seconds", "median s")]


def _times(workload: str) -> list[tuple[str, str]]:
    """The metrics that are times (the summary compares those)."""
    return [(metric, label) for metric, label in _metrics(workload) if label.endswith(" s")]


def workload_table(workload: str, cases: dict[str, CaseResult]) -> str:
    """One row per peer: median seconds, min–max over repeats, and notes."""
    spec = WORKLOADS[workload]
    if spec.bad is not None:
        return fault_table(workload, cases)
    headers = ["library"]
    for _, label in _metrics(workload):
        headers += [label, "min–max"]
    if spec.efficiency:
        headers.append("efficiency")
    if spec.data_mb:
        headers.append("extra / data")
    headers.append("note")
    serial = cases.get("serial", CaseResult(status="skipped")).median()
    rows = []
    for peer, case in cases.items():
        row = [peer]
        for metric, _ in _metrics(workload):
            row += [_number(metric, case.median(metric)), case.spread(metric)]
        if spec.efficiency:
            row.append(_efficiency(serial, case.median(), spec.worker_count())
                       if peer != "serial" else "")
        if spec.data_mb:
            extra = case.median("extra_mb")
            row.append("" if extra is None else f"{extra / spec.data_mb:.2f}")
        notes = [case.status if case.status != "ok" else "", case.note, spec.api.get(peer, ""),
                 f"auto picked {picked(case)}" if picked(case) else ""]
        row.append("; ".join(n for n in notes if n))
        rows.append(row)
    title = f"### {workload}: {spec.what} (workers={spec.worker_count()})"
    return f"{title}\n\n{_table(headers, rows)}"


def picked(case: CaseResult) -> str:
    """Which engine auto picked over the repeats, e.g. "process x5"."""
    counts: dict[str, int] = {}
    for sample in case.samples:
        if "engine" in sample:
            counts[sample["engine"]] = counts.get(sample["engine"], 0) + 1
    return ", ".join(f"{engine} x{n}" for engine, n in counts.items())


def auto_table(results: Results) -> str:
    """Per workload: engine="auto" against the best engine picked by hand, both timed as
    whole ``cw.map`` calls (pool start, and auto's probe, included). "" if auto did not run."""
    headers = ["workload", "auto s", "auto picked", "best by hand", "its s", "auto / best",
               "target", "met", "warm-pool best s"]
    rows = []
    for workload, cases in results.items():
        auto = cases.get(AUTO)
        mine = auto.median() if auto else None
        if auto is None:
            continue
        known = {p: t for p in BY_HAND if p in cases and (t := cases[p].median()) is not None}
        best = min(known, key=known.__getitem__) if known else None
        warm = [t for p in ("corework-process", "corework-thread")
                if p in cases and (t := cases[p].median()) is not None]
        ratio = mine / known[best] if best and mine else None
        target = AUTO_TARGETS.get(workload)
        met = "" if ratio is None or target is None else ("yes" if ratio <= target else "no")
        rows.append([workload, _seconds(mine) or auto.status, picked(auto),
                     (best or "").removeprefix("corework-map-"),
                     _seconds(known.get(best) if best else None),
                     "" if ratio is None else f"{ratio:.2f}",
                     "" if target is None else f"<= {target:.2f}", met,
                     _seconds(min(warm)) if warm else ""])
    if not rows:
        return ""
    title = ('### engine="auto" vs the best engine picked by hand (whole `cw.map` calls; '
             "auto / best > 1: auto slower)")
    return f"{title}\n\n{_table(headers, rows)}"


def _values(case: CaseResult, metric: str) -> str:
    """The distinct values of ``metric`` over the repeats, e.g. "19" or "5 / 7"."""
    return " / ".join(str(v) for v in sorted({s[metric] for s in case.samples if metric in s}))


def _fault_row(peer: str, case: CaseResult, spec: Workload) -> list[str]:
    """library | seconds | other results delivered | outcome of the bad task | note."""
    if case.status == "skipped":
        return [peer, "skipped", "", "", case.note]
    notes = [spec.api.get(peer, "")]
    reported = [s["reported"] for s in case.samples if "reported" in s]
    if reported:
        notes.append(f"crash reported after {1000 * statistics.median(reported):.0f} ms")
    total, known = case.median(), case.median("outcomes")
    if total is not None and known is not None:
        seconds, shutdown = _seconds(total), total - known
        if shutdown >= 0.1:
            notes.append(f"{shutdown:.2f} s of it in shutdown")
    elif case.status == "timeout":
        seconds = f"hang ({case.note})"
        if case.samples:
            notes.append(f"outcomes after {case.samples[-1]['outcomes']:.2f} s; shutdown hung")
    else:
        seconds = case.status
        notes.append(case.note)
    others = len(spec.job({})[1]) - 1
    delivered = f"{_values(case, 'delivered') or 0} of {others}"
    return [peer, seconds, delivered, _values(case, "bad") or "never returned",
            "; ".join(n for n in notes if n)]


def fault_table(workload: str, cases: dict[str, CaseResult]) -> str:
    """One row per peer of a crash or timeout workload: what the caller got, how fast."""
    spec = WORKLOADS[workload]
    headers = ["library", "seconds", "other results delivered", "outcome of the bad task", "note"]
    rows = [_fault_row(peer, case, spec) for peer, case in cases.items()]
    title = f"### {workload}: {spec.what} (workers={spec.worker_count()})"
    return f"{title}\n\n{_table(headers, rows)}"


def summary_table(results: Results) -> str:
    """Per workload (and metric): corework's ratio against the fastest other peer.

    Not for the crash and timeout workloads: there a fast answer may be a lost one.
    "" when no other workload was run."""
    headers = ["workload", "best peer", "peer s"]
    ours = [name for name in COREWORK if any(name in cases for cases in results.values())]
    for name in ours:
        headers += [f"{name} s", "ratio"]
    rows = []
    for workload, cases in results.items():
        if WORKLOADS[workload].bad is not None:
            continue
        for metric, label in _times(workload):
            times = {p: c.median(metric) for p, c in cases.items() if p not in OURS}
            known = {p: t for p, t in times.items() if t is not None}
            best = min(known, key=known.__getitem__) if known else None
            name = workload if metric == "seconds" else f"{workload} ({label.removesuffix(' s')})"
            row = [name, best or "", _seconds(known.get(best) if best else None)]
            for cw in ours:
                mine = cases[cw].median(metric) if cw in cases else None
                ratio = f"{known[best] / mine:.2f}" if best and mine else ""
                row += [_seconds(mine) or (cases[cw].status if cw in cases else ""), ratio]
            rows.append(row)
    if not rows:
        return ""
    title = "### corework vs the best other peer (ratio = peer s / corework s; >1: corework faster)"
    return f"{title}\n\n{_table(headers, rows)}"


def markdown(results: Results, info: dict[str, str], params: dict[str, int], command: str,
             repeats: int) -> str:
    """The whole report: machine, settings, one table per workload, the summary."""
    lines = ["# corework benchmark results", "", f"Command: `{command}`", "",
             f"Median of {repeats} repeat(s), each in a fresh process; times in seconds.", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += [f"- calibration: {', '.join(f'{k}={v}' for k, v in params.items())}", ""]
    for workload, cases in results.items():
        lines += [workload_table(workload, cases), ""]
    lines += [summary_table(results), "", auto_table(results)]
    return "\n".join(lines).rstrip() + "\n"
