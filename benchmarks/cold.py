"""Cold cases: a fresh interpreter for every case, import included — what a user running a
script waits for.

How a cold case is timed. The runner reads ``time.monotonic()`` (CLOCK_MONOTONIC: on
Linux one clock for every process of the machine) just before it starts the case's
interpreter, ``python -c CODE``, and again when that process has exited (a blocking
``waitpid``, not a polling loop). The case's code, a short script written out by
:func:`script`, stamps ``time.monotonic()`` at its first line, after its imports, just
before the call and when the results are in its hands; it prints the stamps only once
the timed part is over. Each figure is a stamp minus the runner's reading:

* **result**: process start to the results in hand: interpreter start, ``site``, the
  library's import, its pool's start and the work. ``cw.map`` closes its own pool before
  it returns, so corework's shutdown is in it; the peers' shutdowns come after.
* **exit**: process start to its exit, every shutdown and the interpreter's teardown
  included: the whole ``python script.py`` as the shell sees it.
* **call** (the "cold auto" table): the map call alone, from just before it to its
  results, in the same fresh process (nothing warm, no remembered verdict).

Every library is imported from bytecode caches, as from an installed package (pip
compiles them at install): :func:`compile_sources` writes them for corework and the
benchmarks first, since an editable install under ``PYTHONDONTWRITEBYTECODE`` would compile
corework from source at every import (86 ms instead of 57 on the project's machine).

Each case is written in the library's plain one-shot style: ``cw.map(fn, items)``
(``engine=`` for the hand-picked engines), ``Parallel(n_jobs=w)(delayed(fn)(x) ...)``,
and a ``with`` block or explicit close around a pool's ``map`` for the others (the chunk
sizes of :mod:`benchmarks.peers`). The task functions come from
:mod:`benchmarks.tasks`, which imports only ``time``. The default engine is never given
``workers=``: sizing the pool is its job (the ``io`` row); the hand-picked engines and
the peers get the workload's worker count (8 for ``io``, one per core elsewhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .peers import missing
from .report import CaseResult, _table

ROOT = Path(__file__).resolve().parent.parent

#: The libraries of the cold table, in its column order, with the short column names.
#: corework-auto is the default engine (``cw.map(fn, items)``, nothing else given);
#: corework-process and corework-thread are ``cw.map(..., engine=...)``.
LABELS = {"corework-auto": "cw auto", "corework-process": "cw process",
          "corework-thread": "cw thread", "mp-pool": "mp.Pool", "cf-process": "PPE",
          "cf-thread": "TPE", "joblib-loky": "joblib", "mpire": "mpire", "pebble": "pebble"}
COREWORK = ("corework-auto", "corework-process", "corework-thread")
PEERS_ONLY = tuple(name for name in LABELS if name not in COREWORK)
#: The issue's target for the default engine in a cold process: at most this many times
#: the best corework engine picked by hand, on every workload of the cold auto table.
AUTO_TARGET = 1.10
AUTO_ROWS = ("tiny", "cpu", "io", "numpy", "bigdata")

#: ``import`` row: the plain import of each library (the pool classes of
#: concurrent.futures are imported on first use, in the other rows).
IMPORTS = {"corework-auto": "import corework", "corework-process": "import corework",
           "corework-thread": "import corework", "mp-pool": "import multiprocessing",
           "cf-process": "import concurrent.futures", "cf-thread": "import concurrent.futures",
           "joblib-loky": "import joblib", "mpire": "import mpire", "pebble": "import pebble"}

#: What each library's map needs imported, and its map: sets ``result`` and ``_result``
#: (the moment the results are in hand), then shuts its pool down.
USES = {
    "corework-auto": ("import corework as cw", "result = cw.map(fn, items)\n"
                      "_result = time.monotonic()"),
    "corework-process": ("import corework as cw",
                         "result = cw.map(fn, items, engine='process'{cw_workers})\n"
                         "_result = time.monotonic()"),
    "corework-thread": ("import corework as cw",
                        "result = cw.map(fn, items, engine='thread'{cw_workers})\n"
                        "_result = time.monotonic()"),
    "mp-pool": ("import multiprocessing", "pool = multiprocessing.Pool({workers})\n"
                "result = pool.map(fn, items)\n_result = time.monotonic()\n"
                "pool.close()\npool.join()"),
    "cf-process": ("from concurrent.futures import ProcessPoolExecutor",
                   "with ProcessPoolExecutor({workers}) as pool:\n"
                   "    result = list(pool.map(fn, items, chunksize={chunksize}))\n"
                   "    _result = time.monotonic()"),
    "cf-thread": ("from concurrent.futures import ThreadPoolExecutor",
                  "with ThreadPoolExecutor({workers}) as pool:\n"
                  "    result = list(pool.map(fn, items))\n    _result = time.monotonic()"),
    "joblib-loky": ("from joblib import Parallel, delayed",
                    "result = Parallel(n_jobs={workers})(delayed(fn)(x) for x in items)\n"
                    "_result = time.monotonic()"),
    "mpire": ("from mpire import WorkerPool", "with WorkerPool(n_jobs={workers}) as pool:\n"
              "    result = pool.map(fn, items)\n    _result = time.monotonic()"),
    "pebble": ("from pebble import ProcessPool", "with ProcessPool(max_workers={workers}) as pool:\n"
               "    result = list(pool.map(fn, items, chunksize={chunksize}).result())\n"
               "    _result = time.monotonic()"),
}

#: What the default engine decided, read after the call (see corework._auto), and the
#: shape (worker processes x task threads) it gives a map of these tasks once it knows.
VERDICT = """
from corework import _auto
_v = _auto.remembered(fn)
facts = {"engine": _v.engine, "reason": _v.reason, **_v.figures} if _v else {"engine": "?"}
if _v and hasattr(_auto, "shape"):
    facts["shape"] = "%d x %d" % _auto.shape(None, _v, len(items))
"""


@dataclass(frozen=True)
class Row:
    """One row of the cold table: what the script sets up (untimed only in the sense that
    every library pays the same for it) and maps, and how its results are checked."""

    name: str
    what: str
    tasks: str = ""  # names imported from benchmarks.tasks
    setup: str = ""  # code that makes ``fn`` and ``items`` (and any data)
    check: str = "True"  # an expression on ``result``, run after the timed part
    workers: int | None = None  # None: one per core
    libs: tuple[str, ...] = tuple(LABELS)
    timeout: float = 60.0  # hard limit for one case, seconds
    budget: float = 30.0  # seconds of repeats after which a case stops repeating

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("import", "the library's plain import (nothing else)", timeout=30.0),
        Row("first", "import + pool + the first result of one x*x", tasks="square",
            setup="fn, items = square, [3]", check="result == [9]", timeout=30.0),
        Row("tiny", "import + 100,000 x*x from a list", tasks="square",
            setup="fn, items = square, list(range(100_000))",
            check="result == [x * x for x in items]"),
        Row("io", "import + 8 tasks of 20 x (i*i; sleep 50 ms); 8 workers, none given to auto",
            tasks="io_task", setup="fn, items = io_task, list(range(8))",
            check="result == list(range(8))", workers=8, timeout=30.0),
        Row("cpu", "import + 16 pure-Python tasks of ~0.2 s", tasks="cpu_task, cpu_sum",
            setup="import functools\nfn = functools.partial(cpu_task, loops={cpu_loops})\n"
                  "items = list(range(16))",
            check="result == [cpu_sum({cpu_loops}) + k for k in range(16)]",
            libs=tuple(n for n in LABELS if n not in ("corework-thread", "cf-thread"))),
        Row("numpy", "import numpy and corework + 16 SVDs of ~0.1 s (GIL released)",
            tasks="svd_task",
            setup="import functools\nimport numpy\n"
                  "fn = functools.partial(svd_task, size={svd_size})\nitems = list(range(16))",
            check="[s for s, _ in result] == list(range(16)) and all(v > 0 for _, v in result)",
            libs=COREWORK, timeout=120.0, budget=40.0),
        Row("bigdata", "import numpy and corework, make a 200 MB array, then 4 tasks that "
            "read it whole: cw.map(partial(fn, array), range(4))",
            tasks="bigdata_task, bigdata_sums, BIGDATA_ITEMS",
            setup="import functools\nimport numpy\n"
                  "data = numpy.arange(BIGDATA_ITEMS, dtype=numpy.float64)\n"
                  "fn = functools.partial(bigdata_task, data)\nitems = list(range(4))",
            check="result == bigdata_sums(4)", workers=2, libs=COREWORK),
    )
}


def script(row: Row, lib: str, params: dict[str, int]) -> str:
    """The whole ``python -c`` program of one cold case."""
    lines = ["import time", "_t = {'started': time.monotonic()}"]
    if row.name == "import":
        lines += [IMPORTS[lib], "_t['imported'] = _t['call'] = _t['result'] = time.monotonic()",
                  "ok, facts = True, {}"]
    else:
        imports, use = USES[lib]
        workers = row.worker_count()
        code = use.format(workers=workers,  # multiprocessing.Pool.map's default chunk size
                          chunksize=f"max(1, -(-len(items) // {4 * workers}))",
                          cw_workers="" if row.workers is None else f", workers={workers}")
        lines += [imports, f"from benchmarks.tasks import {row.tasks}",
                  "_t['imported'] = time.monotonic()", row.setup.format(**params),
                  "_t['call'] = time.monotonic()", code,
                  "_t['result'] = _result", "_t['closed'] = time.monotonic()",
                  f"ok = bool({row.check.format(**params)})",
                  VERDICT if lib == "corework-auto" else "facts = {}"]
    lines += ["import json", "print('@cold ' + json.dumps({'stamps': _t, 'ok': ok, "
              "'facts': facts}), flush=True)"]
    return "\n".join(lines) + "\n"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_cold_case(code: str, timeout: float) -> dict[str, Any]:
    """Run ``python -c code`` in a new session, its whole process group killed at
    ``timeout`` seconds and once it has exited (a pool's leftovers); return the figures
    (seconds from just before the start) or ``{"timeout": ...}`` / ``{"error": ...}``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    # Files, not pipes: a worker that outlives the case and keeps a pipe open would make
    # reading it wait; and proc.wait() without a timeout blocks in waitpid (no polling).
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        fired = threading.Event()

        def limit() -> None:
            fired.set()
            _kill_group(proc.pid)

        timer = threading.Timer(timeout, limit)
        timer.start()
        try:
            proc.wait()
            exited = time.monotonic()
        finally:
            timer.cancel()
            _kill_group(proc.pid)
        if fired.is_set():
            return {"timeout": f"killed at {timeout:g} s"}
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().decode(errors="replace").splitlines()
                 if ln.startswith("@cold ")]
        if not lines:
            tail = (err.read().decode(errors="replace").strip().splitlines()
                    or [f"exit code {proc.returncode}"])[-1]
            return {"error": tail[:300]}
    report = json.loads(lines[-1].removeprefix("@cold "))
    if not report["ok"]:
        return {"error": "wrong results"}
    stamps = {k: v - start for k, v in report["stamps"].items()}
    return {"result": stamps["result"], "exit": exited - start,
            "call": stamps["result"] - stamps["call"], "started": stamps["started"],
            "imported": stamps["imported"], **report["facts"]}


#: results[row][lib]
ColdResults = dict[str, dict[str, CaseResult]]


def run_row(row: Row, libs: list[str], params: dict[str, int], repeats: int,
            progress: bool = True) -> dict[str, CaseResult]:
    """Every repeat of every library's case of ``row``, round-robin (as in the warm
    runner); a case stops at its first failure or once its repeats took ``row.budget``.
    The ``import`` row runs each distinct import once, shared by the libraries that
    have the same one (corework's three engines; concurrent.futures' two pools)."""
    libs = [lib for lib in libs if lib in row.libs]
    cases: dict[str, CaseResult] = {}
    runs: dict[str, str] = {}  # lib -> the lib whose case it shares
    for lib in libs:
        why = missing(lib)
        if why:
            cases[lib] = CaseResult(status="skipped", note=why)
            continue
        same = next((other for other in runs if row.name == "import"
                     and IMPORTS[other] == IMPORTS[lib]), None)
        if same:
            cases[lib] = cases[same]
        else:
            cases[lib] = CaseResult()
            runs[lib] = script(row, lib, params)
    spent = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for lib in [lib for lib in runs if not cases[lib].note]:
            began = time.monotonic()
            result = run_cold_case(runs[lib], row.timeout)
            spent[lib] += time.monotonic() - began
            _record(cases[lib], result, spent[lib] > row.budget, repeats)
    if progress:
        for lib in runs:
            case = cases[lib]
            shown = (f"{case.median('result'):.4f} s (exit {case.median('exit'):.4f} s, "
                     f"{case.spread('result')})" if case.median("result") is not None
                     else case.status)
            print(f"  cold {row.name:8} {lib:17} {shown} {case.note}", file=sys.stderr,
                  flush=True)
    return cases


def _record(case: CaseResult, result: dict[str, Any], over_budget: bool, repeats: int) -> None:
    failure = next((s for s in ("timeout", "error") if s in result), None)
    if failure:
        case.status, case.note = failure, str(result[failure])
        return
    case.samples.append(result)
    if over_budget and len(case.samples) < repeats:
        case.note = f"{len(case.samples)} of {repeats} repeats (time budget)"


def compile_sources() -> None:
    """Write the bytecode caches of corework and the benchmarks, where they are missing or
    stale (as ``__pycache__`` folders next to the sources, which git ignores)."""
    import compileall
    import importlib.util

    for name in ("corework", "benchmarks"):
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def run_cold(rows: list[str], libs: list[str], params: dict[str, int], repeats: int,
             loads: dict[str, float] | None = None) -> ColdResults:
    """Every row in turn; ``loads`` gets the 1-minute load average before each."""
    compile_sources()
    results: ColdResults = {}
    for name in rows:
        load = os.getloadavg()[0]
        if loads is not None:
            loads[f"cold {name}"] = load
        print(f"cold {name}: load average {load:.2f}", file=sys.stderr, flush=True)
        results[name] = run_row(ROWS[name], libs, params, repeats)
    return results


def _cell(case: CaseResult | None, metric: str) -> str:
    if case is None:
        return ""
    value = case.median(metric)
    if value is None:
        return case.status if case.status != "ok" else ""
    return f"{value:.3f}"


def _best_peer(cases: dict[str, CaseResult], metric: str) -> tuple[str, float] | None:
    known = {p: t for p in PEERS_ONLY if p in cases and (t := cases[p].median(metric))}
    if not known:
        return None
    best = min(known, key=known.__getitem__)
    return best, known[best]


def cold_table(results: ColdResults, metric: str = "result") -> str:
    """Rows x libraries, median seconds of ``metric`` from process start; corework's
    ratio to the best peer of each row (>1: corework slower). "" if nothing ran."""
    rows = {r: c for r, c in results.items() if r not in ("numpy", "bigdata")}
    libs = [lib for lib in LABELS if any(lib in cases for cases in rows.values())]
    if not rows or not libs:
        return ""
    ours = [lib for lib in COREWORK if lib in libs]
    headers = ["row", *(LABELS[lib] for lib in libs), "best peer",
               *(f"{LABELS[lib]} / best" for lib in ours)]
    lines = []
    for row, cases in rows.items():
        best = _best_peer(cases, metric)
        line = [row, *(_cell(cases.get(lib), metric) for lib in libs),
                LABELS[best[0]] if best else ""]
        for lib in ours:
            mine = cases[lib].median(metric) if lib in cases else None
            line.append(f"{mine / best[1]:.2f}" if best and mine else "")
        lines.append(line)
    what = {"result": "to the results in hand", "exit": "to the process's exit "
            "(every shutdown and the interpreter's teardown included)"}[metric]
    title = (f"### cold: a fresh `python -c` per case, median seconds from its start {what}; "
             "cw / best > 1: corework slower")
    notes = [f"- {row}: {ROWS[row].what}" for row in rows]
    started = [s["started"] for cases in rows.values() for c in cases.values()
               for s in c.samples]
    if started and metric == "result":
        notes.append(f"- a bare interpreter (to the script's first line) took "
                     f"{statistics.median(started):.3f} s (median over every case)")
    return f"{title}\n\n{_table(headers, lines)}\n\n" + "\n".join(notes)


def _verdicts(case: CaseResult) -> str:
    """The engines auto used over the repeats, each with how many repeats, the shape
    (processes x threads) and the median of the probe's "busy" share."""
    shown = []
    for engine in dict.fromkeys(s.get("engine", "?") for s in case.samples):
        samples = [s for s in case.samples if s.get("engine", "?") == engine]
        busy = [s["busy"] for s in samples if "busy" in s]
        shapes = "/".join(dict.fromkeys(s["shape"] for s in samples if "shape" in s))
        details = [f"{shapes}" if shapes else "",
                   f"busy {statistics.median(busy):.2f}" if busy else ""]
        details = [d for d in details if d]
        shown.append(f"{engine} x{len(samples)}" + (f" ({', '.join(details)})" if details
                                                     else ""))
    return "; ".join(shown)


def auto_table(results: ColdResults) -> str:
    """Per workload: the default engine against the best engine picked by hand, each a
    whole ``cw.map`` call in a fresh process. "" if auto did not run."""
    headers = ["workload", "auto s", "min–max", "auto used", "process s", "thread s",
               "auto / best", "from start", "target", "met", "auto / process"]
    lines, reasons = [], {}
    for row in AUTO_ROWS:
        cases = results.get(row, {})
        auto = cases.get("corework-auto")
        if auto is None:
            continue
        mine = auto.median("call")
        known = {lib: t for lib in ("corework-process", "corework-thread")
                 if lib in cases and (t := cases[lib].median("call")) is not None}
        best = min(known, key=known.__getitem__) if known else None
        ratio = mine / known[best] if best and mine else None
        start = (auto.median("result") / cases[best].median("result")  # type: ignore[operator]
                 if best and mine else None)
        for sample in auto.samples:  # one reason per engine used (the first given)
            reasons.setdefault(row, {}).setdefault(sample.get("engine"),
                                                   sample.get("reason", "?"))
        lines.append([row, f"{mine:.4f}" if mine else auto.status, auto.spread("call"),
                      _verdicts(auto), *(f"{known[lib]:.4f}" if lib in known else ""
                                         for lib in ("corework-process", "corework-thread")),
                      "" if ratio is None else f"{ratio:.2f} ({best.removeprefix('corework-')})"
                      if best else "",
                      "" if start is None else f"{start:.2f}", f"<= {AUTO_TARGET:.2f}",
                      "" if ratio is None else ("yes" if ratio <= AUTO_TARGET else "no"),
                      f"{mine / known['corework-process']:.2f}"
                      if mine and "corework-process" in known else ""])
    if not lines:
        return ""
    title = ("### cold auto: `cw.map(fn, items)` (default engine, no `workers=`) against the "
             "best engine picked by hand (`engine=`, workers as in the cold table), each a "
             "whole call in a fresh process; median seconds of the call; auto / best > 1: "
             "auto slower; \"from start\": the same ratio from process start; "
             "auto / process: its cost over the engine it runs on")
    notes = [f"- {row}: {'; '.join(why.values())}" for row, why in reasons.items()]
    return (f"{title}\n\n{_table(headers, lines)}\n\nauto used: worker processes x task "
            "threads each, and the probe's share of time on a core. Why (corework's "
            "words):\n" + "\n".join(notes))


def tables(results: ColdResults) -> list[str]:
    """The cold tables, those with anything in them."""
    return [t for t in (cold_table(results), cold_table(results, "exit"), auto_table(results))
            if t]
