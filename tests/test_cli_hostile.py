"""``corework run`` against hostile input: no record can stop a run, every bad record is a
failed record with a reason, memory stays bounded, and no file or link planted beside the
output or journal is followed. Each case runs the command as a user would, then reruns it
with its journal: the rerun finishes too."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time

import pytest

from tests.test_cli_run import BASE, TASKS, corework, lines

DEEP = "[" * 10_000 + "]" * 10_000
BIG_INT = "1" * 5_000


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory holding test_cli_run's ``tasks.py``; commands run there."""
    (tmp_path / "tasks.py").write_text(TASKS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _ran(done: subprocess.CompletedProcess[str]) -> list[dict]:
    """The output of a run that finished (every record written, some failed)."""
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if done.stdout:
        return lines(done.stdout)
    with open("out.jsonl") as output:
        return lines(output.read())


# (the input's bytes, the function, extra options, {index: expected error type or None})
CASES = {
    # (3.14 reads and sends 10,000 levels; earlier CPythons give up: either is fine)
    "nested 10,000 deep": (f"1\n{DEEP}\n2\n".encode(), "echo", [],
                           {1: {"InputError", "SerializationError", None}}),
    "a line over --max-record-bytes": (b"1\n" + b'"' + b"x" * 3_000_000 + b'"\n2\n', "echo",
                                       ["--max-record-bytes", "1MiB"], {1: "InputError"}),
    "a 5,000-digit integer in": (f"1\n{BIG_INT}\n2\n".encode(), "echo", [], {1: "InputError"}),
    "a 5,000-digit integer out": (b"1\n5000\n2\n", "big", [], {}),
    "invalid UTF-8": (b"1\n\xff\xfe\n2\n", "echo", [], {1: "InputError"}),
    "a NUL byte": (b'1\n"a\x00b"\n2\n', "echo", [], {1: "InputError"}),
    "a lone surrogate": (b'1\n"\\ud800"\n2\n', "echo", [], {}),
    "a result whose repr raises": (b"1\n2\n", "bad_repr", [], {}),
    "an exception whose str raises": (b"1\n2\n", "bad_message", [], {0: "Odd", 1: "Odd"}),
    "a CSV row nested too deeply": (f"a\n1\n{DEEP}\n".encode(), "echo",
                                    ["--format", "csv", "--typed"], {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_record_stops_a_run(work, case):
    data, function, extra, errors = CASES[case]
    (work / "in.data").write_bytes(data)
    fmt = [] if "--format" in extra else ["--format", "jsonl"]
    args = [f"tasks:{function}", "-i", "in.data", *fmt, *extra, "--ordered"]
    records = _ran(corework(*args))
    expected = data.count(b"\n") - (1 if "csv" in extra else 0)
    assert [record["index"] for record in records] == list(range(expected))
    for record in records:
        wanted = errors.get(record["index"])
        got = record.get("error", {}).get("type") if "error" in record else None
        assert got in wanted if isinstance(wanted, set) else got == wanted, record
        if got is not None:
            assert record["error"]["message"], record
    again = _ran(corework(*args, "-o", "out.jsonl", "--journal", "j.db"))
    rerun = _ran(corework(*args, "-o", "out.jsonl", "--journal", "j.db"))
    assert len(again) == len(rerun) == expected


def test_a_huge_integer_result_is_written_in_hex(work):
    (work / "in.jsonl").write_text("5000\n")
    record = _ran(corework("tasks:big", "-i", "in.jsonl"))[0]
    assert record["repr"] is True and int(record["result"], 16) == 10 ** 5000


def test_a_lone_surrogate_round_trips_as_valid_utf8(work):
    (work / "in.jsonl").write_bytes(b'"\\ud800"\n')
    done = corework("tasks:echo", "-i", "in.jsonl", "-o", "out.jsonl")
    assert done.returncode == 0, done.stderr
    raw = (work / "out.jsonl").read_bytes()
    raw.decode("utf-8")  # valid UTF-8: the surrogate is escaped
    assert json.loads(raw)["result"] == "\ud800"


def _peak_rss_of(args: list[str]) -> int:
    """The peak resident memory (KiB) of ``corework run ARGS``, run alone."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([*BASE, "run", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak >= before
    return peak


@pytest.mark.once  # the same on every interpreter: CI runs it on its main one
def test_malformed_lines_are_not_held_in_memory(work):
    """200,000 malformed lines are written as they are read: the run's memory stays
    near a clean run's. (Run on threads in one process, and the malformed run first: a
    child's peak memory is only known as the largest so far.)"""
    count = 200_000
    (work / "bad.jsonl").write_text("{oops\n" * count)
    (work / "good.jsonl").write_text("1\n" * count)
    options = ["--engine", "thread", "-q", "-o", "out.jsonl"]
    malformed = _peak_rss_of(["tasks:echo", "-i", "bad.jsonl", *options])
    assert len((work / "out.jsonl").read_text().splitlines()) == count
    with_journal = _peak_rss_of(["tasks:echo", "-i", "bad.jsonl", *options,
                                 "--journal", "bad.db"])
    clean = _peak_rss_of(["tasks:echo", "-i", "good.jsonl", *options])
    assert max(malformed, with_journal) <= 2 * clean, (malformed, with_journal, clean)


def test_a_link_planted_at_the_temporary_output_is_not_followed(work):
    victim = work / "victim.txt"
    victim.write_text("precious\n")
    for planted in ("out.jsonl.corework-partial", ".out.jsonl.corework-partial"):
        os.symlink(victim, work / planted)
    (work / "in.jsonl").write_text("1\n2\n")
    records = _ran(corework("tasks:echo", "-i", "in.jsonl", "-o", "out.jsonl",
                            "--journal", "j.db", "--ordered"))
    assert [record["result"] for record in records] == [1, 2]
    assert victim.read_text() == "precious\n"
    assert not (work / "out.jsonl").is_symlink()


@pytest.mark.parametrize("planted", ["j.db", "j.db-wal", "j.db-shm"])
def test_a_journal_that_is_a_link_is_refused(work, planted):
    victim = work / "victim.db"
    victim.write_bytes(b"precious")
    os.symlink(victim, work / planted)
    (work / "in.jsonl").write_text("1\n")
    done = corework("tasks:echo", "-i", "in.jsonl", "-o", "out.jsonl", "--journal", "j.db")
    assert done.returncode == 2
    assert "is a symbolic link" in done.stderr and len(done.stderr.splitlines()) == 1
    assert victim.read_bytes() == b"precious"


def test_a_killed_journaled_run_leaves_no_partial_output(work):
    (work / "in.jsonl").write_text("".join(f"{x}\n" for x in range(10)))
    run = subprocess.Popen([*BASE, "run", "tasks:checked", "-i", "in.jsonl", "-o",
                            "out.jsonl", "--journal", "j.db", "-q"],
                           env={**os.environ, "HANG_AT": "5"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (work / "reached").exists():  # record 5 runs: the run is mid-way
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert sorted(path.name for path in work.iterdir()
                  if "corework-partial" in path.name or path.name == "out.jsonl") == []


def test_output_and_journal_follow_the_umask(work):
    (work / "in.jsonl").write_text("1\n")
    old = os.umask(0o077)
    try:
        done = corework("tasks:echo", "-i", "in.jsonl", "-o", "out.jsonl", "--journal", "j.db")
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert (work / "out.jsonl").stat().st_mode & 0o777 == 0o600
    assert (work / "j.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_one_line(work):
    folder = work / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    (work / "in.jsonl").write_text("1\n")
    try:
        done = corework("tasks:echo", "-i", "in.jsonl", "-o", "locked/out.jsonl")
    finally:
        folder.chmod(0o700)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
