"""The demo's plain-text report: the measurements, a verdict per claim, and notes."""

from __future__ import annotations

import textwrap

from . import verdicts as judge
from .experiments import CPU_TASK_SECONDS, ENGINES, IO_SLEEP, IO_STEPS
from .records import Results, Startup, Timing

__all__ = ["ENGINE_LABELS", "WORKLOAD_LABELS", "render", "verdicts"]

ENGINE_LABELS = {"serial": "serial", "thread": "threads", "process": "processes",
                 "interpreter": "sub-interpreters", "busy": "warning"}
WORKLOAD_LABELS = {"cpu": "cpu", "io": "io", "native": "native (numpy)",
                   "cpu-ft": "cpu, free-threaded"}
_FIRST = 26  # width of the first column
_CELL = 17  # width of the others


def _speedup(results: Results, workload: str, runner: str) -> float | None:
    timing = results.timing(workload, runner)
    return None if timing is None else timing.speedup


def _startup_verdicts(results: Results) -> list[judge.Verdict]:
    threads, processes = results.startup("thread"), results.startup("process")
    if threads is None or processes is None or threads.warm is None or processes.warm is None:
        missing = "the start-up measurement failed: see the notes"
        return [_unmeasured("processes_start", missing), _unmeasured("processes_memory", missing)]
    return [judge.processes_start(processes.warm, threads.warm),
            judge.processes_memory(processes.memory or 0.0, threads.memory or 0.0)]


def _brief(note: str) -> str:
    """A note short enough for a verdict line; the notes below the table keep it whole."""
    if len(note) <= 60:
        return note
    return f"{note.split(':', maxsplit=1)[0]}: see the notes"


def _unmeasured(name: str, why: str = "it failed: see the notes") -> judge.Verdict:
    return judge.Verdict(judge.CLAIMS[name], judge.NOT_MEASURED, why)


def verdicts(results: Results) -> list[judge.Verdict]:
    """One verdict per claim of the lesson, in the lesson's order."""
    p, notes = results.settings.parallel, results.notes
    threads_cpu = _speedup(results, "cpu", "thread")
    processes_cpu = _speedup(results, "cpu", "process")
    threads_io = _speedup(results, "io", "thread")
    race = results.race
    ft_workload = "cpu" if not results.gil else "cpu-ft"
    return [
        _unmeasured("threads_cpu") if threads_cpu is None
        else judge.threads_cpu(threads_cpu, p, results.gil),
        _unmeasured("processes_cpu") if processes_cpu is None
        else judge.processes_cpu(processes_cpu, p),
        _unmeasured("threads_io") if threads_io is None
        else judge.threads_io(threads_io, _speedup(results, "io", "process"),
                              results.settings.io_tasks),
        *_startup_verdicts(results),
        _unmeasured("race", "not run") if race is None
        else judge.race(race.expected, race.unlocked, race.locked),
        judge.threads_native(_speedup(results, "native", "thread"), p,
                             _brief(notes.get("native", ""))),
        judge.interpreters_cpu(_speedup(results, "cpu", "interpreter"), p,
                               _brief(notes.get("interpreter", ""))),
        judge.free_threading(_speedup(results, ft_workload, "thread"), p,
                             results.free_threaded.split(" (")[0],
                             _brief(notes.get("free-threaded", ""))),
    ]


def _cell(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    if timing.seconds is None:
        return "failed"
    if timing.runner == "serial":
        return f"{timing.seconds:.2f} s"
    return f"{timing.seconds:.2f} s {timing.speedup or 0:5.1f}×"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _mib(size: float | None) -> str:
    return "-" if size is None else f"{size / 2**20:.2f} MiB"


def _timings_table(results: Results) -> list[str]:
    runners = ["serial", *ENGINES]
    lines = ["".ljust(_FIRST) + "".join(ENGINE_LABELS[r].ljust(_CELL) for r in runners)]
    for workload, label in WORKLOAD_LABELS.items():
        if any(t.workload == workload for t in results.timings):
            cells = [_cell(results.timing(workload, runner)) for runner in runners]
            lines.append(label.ljust(_FIRST) + "".join(c.ljust(_CELL) for c in cells))
    return [line.rstrip() for line in lines]


def _startup_table(results: Results) -> list[str]:
    by_engine: list[Startup | None] = [results.startup(e) for e in ENGINES]
    rows = [("start-up, pool to result", [_ms(s.warm if s else None) for s in by_engine]),
            ("  the first pool here", [_ms(s.first_pool if s else None) for s in by_engine]),
            ("memory per worker", [_mib(s.memory if s else None) for s in by_engine])]
    lines = [("".ljust(_FIRST + _CELL)
              + "".join(ENGINE_LABELS[e].ljust(_CELL) for e in ENGINES)).rstrip()]
    lines += [(name.ljust(_FIRST + _CELL) + "".join(c.ljust(_CELL) for c in cells)).rstrip()
              for name, cells in rows]
    return lines


def _legend(results: Results) -> list[str]:
    s = results.settings
    steps = max(1, round(IO_STEPS * s.scale))
    return [
        f"cpu:    {s.workers} tasks of a pure-Python loop, ~{CPU_TASK_SECONDS * s.scale:.2g} s "
        f"each, on {s.workers} workers",
        f"io:     {s.io_tasks} tasks of {steps} × (i * i; sleep {IO_SLEEP * 1e3:.0f} ms), "
        f"on {s.io_tasks} workers (the lesson's square_numbers)",
        f"native: {s.workers} tasks of numpy matrix products, BLAS held to 1 thread, "
        f"on {s.workers} workers",
        "        (new process workers import numpy first: part of their time)",
        f"each time is the best of {s.repeats} run{'s' if s.repeats > 1 else ''} (io: "
        f"{s.io_repeats}), pool start included; × is the speedup over serial",
    ]


def _notes(results: Results) -> list[str]:
    notes = [f"{ENGINE_LABELS.get(k, k)}: {v}" for k, v in results.notes.items()]
    if results.free_threaded:
        notes.append(f"free-threaded: {results.free_threaded}")
    for t in results.timings:
        line = f"{ENGINE_LABELS[t.runner]} on {t.workload}: {t.error}"
        if t.error and line not in notes:
            notes.append(line)
    for s in results.startups:
        if s.error:
            notes.append(f"{ENGINE_LABELS[s.engine]} start-up: {s.error}")
        elif s.memory_how:
            notes.append(f"memory of {ENGINE_LABELS[s.engine]}: {s.memory_how}")
    return notes


def render(results: Results, found: list[judge.Verdict]) -> str:
    """The whole report, as printed."""
    s = results.settings
    gil = "GIL on" if results.gil else "no GIL"
    lines = ["corework demo: the threads-vs-processes lesson, measured on this machine",
             f"CPython {results.python} ({gil}), {s.cores} cores, {s.workers} workers", ""]
    lines += [*_timings_table(results), "", *_legend(results), "", *_startup_table(results), ""]
    width = max(len(v.claim) for v in found) + 2
    lines += [f"{v.status:<15}{v.claim:<{width}}{v.evidence}" for v in found]
    notes = _notes(results)
    if notes:
        lines += ["", "notes:"]
        lines += [textwrap.fill(note, 98, initial_indent="  ", subsequent_indent="    ",
                                break_on_hyphens=False) for note in notes]
    return "\n".join(lines)
