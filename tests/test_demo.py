"""``corework demo``: end to end once (``--quick``), and its verdicts and report from
synthetic numbers, so that what it concludes is tested without trusting a busy machine."""

from __future__ import annotations

import html.parser
import subprocess
import sys
from pathlib import Path

import pytest

from corework.cli.demo import chart as _demo_chart
from corework.cli.demo import table as _demo_table
from corework.cli.demo import verdicts as judge
from corework.cli.demo.records import Race, Results, Settings, Startup, Timing

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Tags(html.parser.HTMLParser):
    """Counts start tags and collects the URLs a page would fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.fetches: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.fetches += [value or "" for name, value in attrs
                         if name in ("src", "href") and tag != "a"]


def _parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    tags.close()
    return tags


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, "-m", "corework", "demo", "--quick", "--output",
                           str(output)], capture_output=True, text=True, timeout=120)
    return done, output


@pytest.mark.once  # the same on every interpreter: CI runs it on its main one
def test_quick_demo_prints_a_verdict_per_claim(quick_run):
    done, output = quick_run
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for claim in judge.CLAIMS.values():
        verdict = [line for line in lines if claim in line]
        assert len(verdict) == 1, claim
        assert verdict[0].startswith((judge.CONFIRMED, judge.NOT_CONFIRMED, judge.NOT_MEASURED))
    for row in ("cpu ", "io ", "start-up, pool to result", "memory per worker"):
        assert any(line.startswith(row) for line in lines), row
    assert f"page: {output / 'demo.html'}" in lines


@pytest.mark.once  # the same on every interpreter: CI runs it on its main one
def test_quick_demo_writes_a_valid_png(quick_run):
    done, output = quick_run
    pytest.importorskip("matplotlib")
    assert f"chart: {output / 'demo.png'}" in done.stdout.splitlines()
    png = output / "demo.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert 10_000 < png.stat().st_size < 200_000
    from matplotlib.image import imread

    height, width, _ = imread(png).shape
    assert width > height > 100


@pytest.mark.once  # the same on every interpreter: CI runs it on its main one
def test_quick_demo_writes_a_self_contained_page(quick_run):
    _, output = quick_run
    page = (output / "demo.html").read_text(encoding="utf-8")
    tags = _parse(page)
    assert tags.counts.get("svg") == 3  # speedups, start-up, memory
    assert tags.counts.get("rect", 0) >= 6
    assert tags.fetches == []  # nothing from the network, nor from beside the page
    assert "threads: no effect on CPU-bound work" in page


# -- from synthetic numbers --------------------------------------------------------------

def _results(*, gil: bool = True, free_threaded: float | None = 1.8) -> Results:
    results = Results(Settings(workers=2, cores=2, repeats=1), "3.11.7", gil)
    for workload, tasks_seconds in (("cpu", (1.0, 0.98, 0.52)), ("io", (1.6, 0.21, 0.25)),
                                    ("native", (1.0, 0.55, 0.53))):
        serial = tasks_seconds[0]
        for runner, seconds in zip(("serial", "thread", "process"), tasks_seconds):
            results.timings.append(Timing(workload, runner, seconds, serial))
        results.timings.append(Timing(workload, "interpreter", None, serial, "ImportError: x"))
    if free_threaded is not None:
        results.timings += [Timing("cpu-ft", "serial", 1.0, 1.0),
                            Timing("cpu-ft", "thread", 1.0 / free_threaded, 1.0)]
        results.free_threaded = "CPython 3.13.1 free-threaded (/opt/python3.13t)"
    else:
        results.notes["free-threaded"] = "no free-threaded interpreter found"
    results.startups = [Startup("thread", 0.001, 0.0004, 0.0, "RSS growth"),
                        Startup("process", 0.05, 0.004, 9e6, "USS")]
    results.race = Race(4000, 2100, 4000)
    results.notes["interpreter"] = "not available here: ValueError: no"
    return results


def test_gains_and_no_gain_are_relative_to_the_cores():
    assert judge.gains(1.5, 2) and not judge.gains(1.4, 2)
    assert judge.gains(2.5, 4) and not judge.gains(2.4, 4)
    assert judge.no_gain(1.19, 2) and not judge.no_gain(1.2, 2)
    assert judge.no_gain(1.5, 4) and not judge.no_gain(1.6, 4)


@pytest.mark.parametrize(("verdict", "status"), [
    (judge.threads_cpu(0.98, 2), judge.CONFIRMED),
    (judge.threads_cpu(1.9, 2, gil=False), judge.NOT_CONFIRMED),
    (judge.threads_cpu(1.0, 1), judge.NOT_MEASURED),
    (judge.processes_cpu(1.9, 2), judge.CONFIRMED),
    (judge.processes_cpu(1.1, 2), judge.NOT_CONFIRMED),
    (judge.threads_io(7.6, 7.0, 8), judge.CONFIRMED),
    (judge.threads_io(1.2, None, 8), judge.NOT_CONFIRMED),
    (judge.processes_start(0.004, 0.0004), judge.CONFIRMED),
    (judge.processes_start(0.004, 0.003), judge.NOT_CONFIRMED),
    (judge.processes_memory(9e6, 1e4), judge.CONFIRMED),
    (judge.processes_memory(5e5, 1e4), judge.NOT_CONFIRMED),  # under 1 MiB
    (judge.race(4000, 2100, 4000), judge.CONFIRMED),
    (judge.race(4000, 4000, 4000), judge.NOT_CONFIRMED),  # no update lost
    (judge.race(4000, 2100, 3999), judge.NOT_CONFIRMED),  # the lock did not help
    (judge.threads_native(1.8, 2), judge.CONFIRMED),
    (judge.threads_native(None, 2, "skipped: no numpy"), judge.NOT_MEASURED),
    (judge.interpreters_cpu(1.9, 2), judge.CONFIRMED),
    (judge.interpreters_cpu(None, 2, "not available here"), judge.NOT_MEASURED),
    (judge.free_threading(1.6, 2, "CPython 3.13.1"), judge.CONFIRMED),
    (judge.free_threading(1.0, 2), judge.NOT_CONFIRMED),
])
def test_verdicts_from_numbers(verdict, status):
    assert verdict.status == status
    assert verdict.claim in judge.CLAIMS.values()


def test_verdicts_carry_the_numbers():
    assert judge.threads_cpu(0.98, 2).evidence == "threads 0.98× on cpu (one GIL)"
    assert "processes 1.92× on cpu, 2 at once" in judge.processes_cpu(1.92, 2).evidence
    assert "2,100 of 4,000" not in judge.race(4000, 2100, 4000).evidence
    assert "1,900 of 4,000 increments lost" in judge.race(4000, 2100, 4000).evidence
    assert judge.interpreters_cpu(None, 2, "not available here: X").evidence == (
        "not available here: X")


def test_one_verdict_per_claim_in_the_lessons_order():
    found = _demo_table.verdicts(_results())
    assert [v.claim for v in found] == list(judge.CLAIMS.values())
    statuses = {v.claim: v.status for v in found}
    assert statuses[judge.CLAIMS["interpreters_cpu"]] == judge.NOT_MEASURED
    assert statuses[judge.CLAIMS["free_threading"]] == judge.CONFIRMED
    assert all(s == judge.CONFIRMED for c, s in statuses.items()
               if c != judge.CLAIMS["interpreters_cpu"])


def test_without_the_gil_the_cpu_row_judges_free_threading():
    results = _results(gil=False, free_threaded=None)
    found = {v.claim: v for v in _demo_table.verdicts(results)}
    assert found[judge.CLAIMS["threads_cpu"]].evidence.endswith("(this Python has no GIL)")
    assert found[judge.CLAIMS["free_threading"]].status == judge.NOT_CONFIRMED  # 1.02×


def test_no_free_threaded_python_is_said():
    found = {v.claim: v for v in _demo_table.verdicts(_results(free_threaded=None))}
    verdict = found[judge.CLAIMS["free_threading"]]
    assert verdict.status == judge.NOT_MEASURED
    assert verdict.evidence == "no free-threaded interpreter found"


def test_report_and_page_from_synthetic_results(tmp_path):
    results = _results()
    found = _demo_table.verdicts(results)
    report = _demo_table.render(results, found)
    assert "cpu, free-threaded" in report
    assert "sub-interpreters on cpu: ImportError: x" in report
    assert "failed" in report  # the interpreter cells
    _demo_chart.write_html(results, found, report, tmp_path / "demo.html")
    tags = _parse((tmp_path / "demo.html").read_text(encoding="utf-8"))
    assert tags.counts["svg"] == 3
    assert tags.counts["tr"] == len(judge.CLAIMS)
