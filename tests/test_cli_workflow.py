"""``corework run`` after the first run: a fixed function, early stops, full disks, usage
errors as one line — the real command in a subprocess, on real files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import corework as cw

COMMAND = Path(sys.executable).with_name("corework")
BASE = [str(COMMAND)] if COMMAND.exists() else [sys.executable, "-m", "corework"]

BROKEN = textwrap.dedent('''
    def work(x):
        if x % 4 == 0:
            raise ValueError(f"{x} is bad")
        return x * 10

    def two_args(a, b):
        return a + b
''')
FIXED = BROKEN.replace('raise ValueError(f"{x} is bad")', "return -x")


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "tasks.py").write_text(BROKEN)
    (tmp_path / "numbers.jsonl").write_text("".join(f"{i}\n" for i in range(1, 21)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def corework(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASE, *args], capture_output=True, text=True, timeout=timeout)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def results(path: Path) -> dict[int, object]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["index"]: row.get("result", row.get("error")) for row in rows}


def test_retry_failed_after_a_fix_runs_only_the_failed_records_with_the_new_function(work):
    run = ["run", "tasks:work", "-i", "numbers.jsonl", "-o", "out.jsonl", "--journal", "j.db"]
    assert corework(*run).returncode == 1
    (work / "tasks.py").write_text(FIXED)
    refused = corework(*run)
    assert refused.returncode == 2
    assert "--retry-failed" in one_line(refused)
    done = corework(*run, "--retry-failed")
    assert done.returncode == 0, done.stderr
    assert "the function changed" in done.stderr and "5 failed ones" in done.stderr
    assert "15 records that succeeded are kept" in done.stderr
    assert results(work / "out.jsonl") == {
        i - 1: (-i if i % 4 == 0 else i * 10) for i in range(1, 21)}
    db = sqlite3.connect(work / "j.db")
    versions = db.execute("SELECT fn, sum(ok), count(*) FROM records GROUP BY fn").fetchall()
    db.close()
    assert versions == [(1, 15, 15), (2, 5, 5)]  # which version wrote each record
    # Now the journal is the new function's: a plain rerun is a resume, not a refusal.
    assert corework(*run).returncode == 0


def test_a_schema_1_journal_is_migrated(work):
    run = ["run", "tasks:work", "-i", "numbers.jsonl", "-o", "out.jsonl", "--journal", "j.db"]
    assert corework(*run).returncode == 1
    db = sqlite3.connect(work / "j.db")  # made into what the previous version wrote
    db.executescript("""
        CREATE TABLE old AS SELECT idx, ok, seq, line FROM records; DROP TABLE records;
        ALTER TABLE old RENAME TO records; DROP TABLE functions;
        UPDATE meta SET value = '1' WHERE key = 'schema';""")
    db.close()
    (work / "tasks.py").write_text(FIXED)
    done = corework(*run, "--retry-failed")
    assert done.returncode == 0, done.stderr
    assert len(results(work / "out.jsonl")) == 20


def test_max_failures_stops_early_and_says_how_to_resume(work):
    (work / "many.jsonl").write_text("".join(f"{i}\n" for i in range(3000)))
    run = ["run", "tasks:two_args", "-i", "many.jsonl", "-o", "out.jsonl", "--journal", "j.db",
           "--max-failures", "5", "--chunksize", "10", "-q"]
    done = corework(*run)
    assert done.returncode == 1
    line = one_line(done)
    assert "--max-failures 5" in line and "--retry-failed" in line
    finished = results(work / "out.jsonl")
    assert 5 <= len(finished) < 3000
    # The journal holds exactly what the output holds: consistent, resumable.
    db = sqlite3.connect(work / "j.db")
    assert db.execute("SELECT count(*) FROM records").fetchone()[0] == len(finished)
    db.close()


def test_tracebacks_start_at_the_users_frame(work):
    done = corework("run", "tasks:work", "-i", "numbers.jsonl", "-q")
    errors = [row["error"] for row in map(json.loads, done.stdout.splitlines())
              if "error" in row]
    assert errors and all('tasks.py", line 4, in work' in e["traceback"] for e in errors)
    assert all("corework" not in e["traceback"] for e in errors)
    wrong = corework("run", "tasks:two_args", "-i", "numbers.jsonl", "-q")
    tb = json.loads(wrong.stdout.splitlines()[0])["error"]["traceback"]
    assert tb.startswith("TypeError: two_args() missing 1 required positional argument")


@pytest.mark.parametrize("args", [["--version"], ["-m", "corework", "--version"]])
def test_version(args):
    from importlib.metadata import version

    command = [sys.executable, *args] if args[0] == "-m" else [*BASE, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"corework {version('corework')}\n"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="sub-interpreters run here")
def test_an_engine_that_cannot_run_here_is_a_usage_error(work):
    done = corework("run", "tasks:work", "-i", "numbers.jsonl", "--engine", "interpreter")
    assert done.returncode == 2
    assert "needs Python 3.12" in one_line(done)


@pytest.mark.parametrize("output", ["no/such/dir/out.jsonl", "."])
def test_a_bad_output_is_a_usage_error(work, output):
    done = corework("run", "tasks:work", "-i", "numbers.jsonl", "-o", output)
    assert done.returncode == 2
    assert "output" in one_line(done)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("journal", [False, True])
def test_a_full_disk_is_one_line_and_exit_1(work, journal):
    extra = ["--journal", "j.db"] if journal else []
    done = corework("run", "tasks:work", "-i", "numbers.jsonl", "-o", "/dev/full", "-q", *extra)
    assert done.returncode == 1
    assert "No space left on device" in one_line(done)
    assert Path("/dev/full").is_char_device()  # written in place, never renamed over
    if journal:
        assert "safe in the journal" in done.stderr
        again = corework("run", "tasks:work", "-i", "numbers.jsonl", "-o", "out.jsonl",
                         "--journal", "j.db", "-q")
        assert again.returncode == 1 and len(results(work / "out.jsonl")) == 20


def test_run_help_lists_every_engine():
    done = corework("run", "--help")
    text = " ".join(done.stdout.split())
    assert all(engine in text for engine in cw.ENGINES)
    assert "--max-failures" in text and "--retry-failed" in text
