"""``corework run`` end to end: the real command in a subprocess, on real files."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

COMMAND = Path(sys.executable).with_name("corework")
BASE = [str(COMMAND)] if COMMAND.exists() else [sys.executable, "-m", "corework"]

TASKS = textwrap.dedent('''
    import os, time
    from pathlib import Path

    def square(x):
        if x == 3:
            raise ValueError("three is bad")
        return x * x

    def add(a, b=0):
        return a + b

    def echo(value):
        return value

    def upper(line):
        return line.upper()

    def checked(x):
        """Hangs at record HANG_AT (after leaving a marker) so a test can kill the run
        there; fails where FAIL_EVERY divides x."""
        if x == int(os.environ.get("HANG_AT", "-1")):
            Path("reached").write_text(str(x))
            time.sleep(60)
        every = int(os.environ.get("FAIL_EVERY", "0"))
        if every and x % every == 0:
            raise RuntimeError(f"flaky at {x}")
        return x * 2

    def cube(x):
        return x ** 3

    def hang_on_two(x):
        while x == 2:
            pass
        return x

    def a_set(x):
        return {x}

    def nothing(x):
        return None

    LIMIT = 10

    def big(digits):
        return 10 ** digits

    def bad_repr(x):
        class Odd:
            def __repr__(self):
                raise RuntimeError("no repr")
        return Odd()

    def bad_message(x):
        class Odd(Exception):
            def __str__(self):
                raise RuntimeError("no str")
        raise Odd()

    def big_line(x):
        return "x" * x
''')


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory holding ``tasks.py``; commands run there."""
    (tmp_path / "tasks.py").write_text(TASKS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def corework(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASE, "run", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def by_index(records: list[dict]) -> dict[int, dict]:
    found = {r["index"]: r for r in records}
    assert len(found) == len(records), "a record appears twice"
    return found


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(f"{json.dumps(row)}\n" for row in rows))
    return path


# ------------------------------------------------------------------------------ formats


def test_jsonl_values_and_spread_args_in_order(work):
    write(work / "in.jsonl", [1, {"args": [2, 3]}, {"kwargs": {"a": 4, "b": 5}},
                              {"args": [6], "kwargs": {"b": 1}}])
    done = corework("tasks:add", "-i", "in.jsonl", "--ordered")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [{"index": i, "result": r, "attempts": 1}
                                  for i, r in enumerate([1, 5, 9, 7])]
    assert "4 succeeded, 0 failed" in done.stderr


def test_objects_with_other_keys_are_one_value(work):
    write(work / "in.jsonl", [{"args": [1], "x": 2}, [1, 2], "text", None])
    done = corework("tasks:echo", "-i", "in.jsonl", "--ordered", "-q")
    assert [r["result"] for r in lines(done.stdout)] == [{"args": [1], "x": 2}, [1, 2],
                                                         "text", None]
    assert done.stderr == ""


def test_csv_rows_as_strings_or_typed(work):
    (work / "in.csv").write_text('name,n,ok\nann,1,true\n"b, c",2.5,null\n')
    plain = corework("tasks:echo", "-i", "in.csv", "--ordered")
    assert [r["result"] for r in lines(plain.stdout)] == [
        {"name": "ann", "n": "1", "ok": "true"}, {"name": "b, c", "n": "2.5", "ok": "null"}]
    typed = corework("tasks:echo", "-i", "in.csv", "--ordered", "--typed")
    assert [r["result"] for r in lines(typed.stdout)] == [
        {"name": "ann", "n": 1, "ok": True}, {"name": "b, c", "n": 2.5, "ok": None}]


def test_text_lines_from_stdin_to_a_file(work):
    done = corework("tasks.py:upper", "--format", "text", "-o", "out.jsonl", "--ordered",
                    stdin="alpha\nbeta\n\ngamma")
    assert done.returncode == 0, done.stderr
    results = [r["result"] for r in lines((work / "out.jsonl").read_text())]
    assert results == ["ALPHA", "BETA", "", "GAMMA"]


def test_stdin_is_json_lines_and_stdout_is_the_default(work):
    done = corework("tasks:square", stdin="".join(f"{i}\n" for i in range(10)))
    assert done.returncode == 1  # record 3 raises
    records = by_index(lines(done.stdout))
    assert sorted(records) == list(range(10))
    assert records[3]["error"]["type"] == "ValueError"
    assert records[3]["error"]["message"] == "three is bad"
    assert "tasks.py" in records[3]["error"]["traceback"]
    assert records[4] == {"index": 4, "result": 16, "attempts": 1}


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_unordered_output_holds_every_record_once(work, engine):
    write(work / "in.jsonl", list(range(300)))
    done = corework("tasks:cube", "-i", "in.jsonl", "--engine", engine, "--chunksize", "7")
    assert done.returncode == 0, done.stderr
    assert {i: r["result"] for i, r in by_index(lines(done.stdout)).items()} == {
        i: i ** 3 for i in range(300)}


def test_unserialisable_results_are_kept_as_repr(work):
    write(work / "in.jsonl", [1])
    done = corework("tasks:a_set", "-i", "in.jsonl")
    assert lines(done.stdout) == [{"index": 0, "result": "{1}", "attempts": 1, "repr": True}]
    assert done.returncode == 0


def test_options_reach_the_pool(work):
    write(work / "in.jsonl", list(range(5)))
    done = corework("tasks:hang_on_two", "-i", "in.jsonl", "--engine", "process",
                    "--workers", "2", "--timeout", "0.5", "--retries", "1",
                    "--memory-limit", "1GiB", "--ordered")
    assert done.returncode == 1
    records = lines(done.stdout)
    assert records[2]["error"]["type"] == "TaskTimeout" and records[2]["attempts"] == 2
    assert [r["result"] for r in records if r["index"] != 2] == [0, 1, 3, 4]


# ------------------------------------------------------------------------------ bad input


def test_malformed_lines_are_failed_records_and_the_run_goes_on(work):
    (work / "in.jsonl").write_bytes(b'1\n{oops\n\n{"args": 5}\n\xff\xfe\n6\n')
    done = corework("tasks:square", "-i", "in.jsonl", "--ordered")
    assert done.returncode == 1
    records = lines(done.stdout)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["result"] == 1 and records[4]["result"] == 36
    messages = [r["error"]["message"] for r in records[1:4]]
    assert messages[0].startswith("line 2: invalid JSON")
    assert messages[1] == "line 4: 'args' must be a list, not int"
    assert messages[2].startswith("line 5: not UTF-8")
    assert all(r["error"]["type"] == "InputError" and r["attempts"] == 0 for r in records[1:4])
    assert "Traceback" not in done.stderr


def test_malformed_csv_rows(work):
    (work / "in.csv").write_text("a,b\n1,2\n3\n4,5\n")
    done = corework("tasks:echo", "-i", "in.csv", "--ordered")
    records = lines(done.stdout)
    assert records[1]["error"]["message"] == "line 3: expected 2 fields (as in the header), found 1"
    assert records[2]["result"] == {"a": "4", "b": "5"}


def test_strict_stops_at_the_first_malformed_line(work):
    (work / "in.jsonl").write_text("1\n2\n{oops\n" + "4\n" * 1000)
    done = corework("tasks:cube", "-i", "in.jsonl", "--strict")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("(stopped there: --strict)")
    assert "line 3: invalid JSON" in done.stderr
    assert len(lines(done.stdout)) < 10


@pytest.mark.parametrize(("args", "message"), [
    (["nosuchmodule:f", "-i", "in.jsonl"], "no module named 'nosuchmodule'"),
    (["tasks:nosuch", "-i", "in.jsonl"], "'tasks' has no 'nosuch'"),
    (["missing.py:f", "-i", "in.jsonl"], "no such file: 'missing.py'"),
    (["tasks", "-i", "in.jsonl"], "must be package.module:function"),
    (["tasks:os", "-i", "in.jsonl"], "is a module, not a function"),
    (["tasks:LIMIT", "-i", "in.jsonl"], "is an int, not a function"),
    (["tasks:square", "-i", "nope.jsonl"], "no such input file: 'nope.jsonl'"),
    (["tasks:square", "-i", "in.data"], "say --format"),
    (["tasks:square", "-i", "in.jsonl", "--workers", "0"], "expected a positive whole number"),
    (["tasks:square", "-i", "in.jsonl", "--workers", "abc"], "'abc' is not a number"),
    (["tasks:square", "-i", "in.jsonl", "--timeout", "-1"], "expected a positive number"),
    (["tasks:square", "-i", "in.jsonl", "--max-record-bytes", "lots"], "'lots' is not a size"),
    (["tasks:square", "-i", "in.jsonl", "--retry-failed"], "--retry-failed needs --journal"),
    pytest.param(["tasks:square", "-i", "in.jsonl", "--engine", "dask", "--address",
                  "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler at tcp://127.0.0.1:1",
                 marks=pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                          reason="needs dask's distributed")),
    (["tasks:square", "-i", "in.jsonl", "--engine", "gpu"], "engine must be one of"),
    (["tasks:square", "-i", "in.jsonl", "--memory-limit", "lots"], "memory-limit must be"),
    (["tasks:square", "-i", "in.jsonl", "--engine", "thread", "--memory-limit", "1GB"],
     "needs --engine process"),
    (["tasks:square", "--journal", "j.db"], "--journal needs an input file"),
    (["tasks:square", "-i", "in.jsonl", "-o", "no/such/dir/out.jsonl"], "cannot write"),
    (["tasks:square", "-i", "in.jsonl", "--journal", "in.jsonl"], "cannot use 'in.jsonl'"),
])
def test_usage_errors_are_one_line_and_exit_code_2(work, args, message):
    write(work / "in.jsonl", [1, 2])
    (work / "in.data").write_text("1\n")
    done = corework(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_an_unpicklable_function_is_a_usage_error(work):
    (work / "odd.py").write_text("import threading\nf = lambda x: x\nf.lock = threading.Lock()\n")
    write(work / "in.jsonl", [1])
    done = corework("odd:f", "-i", "in.jsonl", "--engine", "process")
    assert done.returncode == 2
    assert "cannot be sent to worker processes" in done.stderr
    assert "--engine thread" in done.stderr
    assert corework("odd:f", "-i", "in.jsonl", "--engine", "thread").returncode == 0


# ------------------------------------------------------------------------------ the journal


def test_a_finished_journal_is_reused_and_refused_for_another_run(work):
    write(work / "in.jsonl", list(range(20)))
    first = corework("tasks:square", "-i", "in.jsonl", "--journal", "j.db", "-o", "a.jsonl")
    assert first.returncode == 1
    again = corework("tasks:square", "-i", "in.jsonl", "--journal", "j.db", "-o", "b.jsonl")
    assert again.returncode == 1
    assert "20 skipped" in again.stderr and "1 of the skipped records had failed" in again.stderr
    assert (work / "a.jsonl").read_text() == (work / "b.jsonl").read_text()

    other_function = corework("tasks:cube", "-i", "in.jsonl", "--journal", "j.db")
    assert other_function.returncode == 2
    assert "was written for another function" in other_function.stderr
    write(work / "in.jsonl", list(range(21)))
    other_input = corework("tasks:square", "-i", "in.jsonl", "--journal", "j.db")
    assert other_input.returncode == 2
    assert "was written for another input" in other_input.stderr
    as_text = corework("tasks:square", "-i", "in.jsonl", "--journal", "j.db", "--format", "text")
    assert as_text.returncode == 2


def test_a_journal_in_use_is_refused(work):
    write(work / "in.jsonl", list(range(10)))
    proc = start(["tasks:checked", "-i", "in.jsonl", "--journal", "j.db"], {"HANG_AT": "5"})
    try:
        wait_for(work / "reached", proc)
        second = corework("tasks:checked", "-i", "in.jsonl", "--journal", "j.db")
        assert second.returncode == 2
        assert "journal 'j.db' is in use by another run" in second.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert_session_gone(proc.pid)


def test_retry_failed_reruns_only_the_failed_records(work):
    write(work / "in.jsonl", list(range(30)))
    args = ["tasks:checked", "-i", "in.jsonl", "--journal", "j.db", "-o", "out.jsonl",
            "--ordered"]
    first = corework(*args, env={"FAIL_EVERY": "7"})
    assert first.returncode == 1
    assert sum("error" in r for r in lines((work / "out.jsonl").read_text())) == 5
    retried = corework(*args, "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "5 succeeded, 0 failed, 25 skipped" in retried.stderr
    assert lines((work / "out.jsonl").read_text()) == [
        {"index": i, "result": 2 * i, "attempts": 1} for i in range(30)]


def clean_run(work: Path, n: int) -> str:
    write(work / "in.jsonl", list(range(n)))
    done = corework("tasks:checked", "-i", "in.jsonl", "-o", "clean.jsonl", "--ordered")
    assert done.returncode == 0, done.stderr
    return (work / "clean.jsonl").read_text()


_started: list[subprocess.Popen[str]] = []


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """A run in a session of its own; ended, whole session, after the test (a test that
    failed while it hung must not leave it running)."""
    proc = subprocess.Popen([*BASE, "run", *args], env={**os.environ, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_run_left_running():
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def assert_session_gone(session: int, seconds: float = 10) -> None:
    """No process of the killed run's session is left (launcher and workers included)."""
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == session and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc.pid)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        if not left:
            return
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.05)


N_RECORDS = 400
RUN = ["tasks:checked", "-i", "in.jsonl", "--journal", "j.db", "-o", "out.jsonl",
       "--ordered", "--chunksize", "3", "--workers", "2"]


@pytest.mark.parametrize("hang_at", [0, 157, 399])
def test_sigkilled_run_resumes_to_the_clean_output(work, hang_at):
    expected = clean_run(work, N_RECORDS)
    proc = start(RUN, {"HANG_AT": str(hang_at)})
    wait_for(work / "reached", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert_session_gone(proc.pid)
    assert not (work / "out.jsonl").exists()
    resumed = corework(*RUN)
    assert resumed.returncode == 0, resumed.stderr
    if hang_at:  # what finished before the kill is not run again
        assert int(re.search(r"(\d+) skipped", resumed.stderr).group(1)) >= hang_at // 2
    assert (work / "out.jsonl").read_text() == expected


@pytest.mark.parametrize("kill_after", [1, 150, 260])
def test_killed_in_the_middle_of_a_commit_resumes_to_the_clean_output(work, kill_after):
    expected = clean_run(work, N_RECORDS)
    proc = start(RUN, {"COREWORK_JOURNAL_TEST_KILL_AFTER": str(kill_after)})
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_session_gone(proc.pid)
    resumed = corework(*RUN)
    assert resumed.returncode == 0, resumed.stderr
    skipped = re.search(r"([\d,]+) skipped", resumed.stderr)
    assert int(skipped.group(1).replace(",", "") if skipped else 0) < kill_after  # no half commit
    assert (work / "out.jsonl").read_text() == expected


def test_ctrl_c_then_resume(work):
    expected = clean_run(work, N_RECORDS)
    proc = start(RUN, {"HANG_AT": "200"})
    wait_for(work / "reached", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "run the same command again to finish the rest" in stderr
    assert "Traceback" not in stderr
    assert_session_gone(proc.pid)
    resumed = corework(*RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from j.db" in resumed.stderr
    assert (work / "out.jsonl").read_text() == expected


# ------------------------------------------------------------------------------ big input


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@pytest.mark.once  # the same on every interpreter: CI runs it on its main one
def test_a_million_lines_stream_in_flat_memory(work):
    n = 1_000_000
    with open(work / "in.txt", "w") as f:
        f.writelines(f"{i}\n" for i in range(n))
    started = time.monotonic()
    proc = subprocess.Popen([*BASE, "run", "tasks:nothing", "-i", "in.txt", "-o", "out.jsonl",
                             "--chunksize", "5000", "-q"], stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.NoSuchProcess:
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        stop.set()
        watcher.join()
    assert proc.returncode == 0, stderr
    with open(work / "out.jsonl") as out:
        count = sum(1 for _ in out)
    assert count == n
    assert peak < 300 * 2**20, f"the process tree reached {peak / 2**20:.0f} MiB"
    print(f"1M lines: {time.monotonic() - started:.1f} s, peak RSS {peak / 2**20:.0f} MiB")


# ------------------------------------------------------------------------------ progress


def test_status_lines_when_stderr_is_not_a_terminal(monkeypatch):
    import io

    import corework as cw
    from corework.api import progress as _progress

    monkeypatch.setattr(_progress, "STATUS_EVERY", 0.01)
    out = io.StringIO()
    progress = cw.progress(1000, 100, quiet=False, out=out, label="corework run")
    progress.advance(380, 20)
    deadline = time.monotonic() + 10
    while "corework run: 500/1,000 (50%) done, 20 failed" not in out.getvalue():
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.01)
    progress.close()
    assert "ETA" in out.getvalue()
    quiet = io.StringIO()
    cw.progress(10, 0, quiet=True, out=quiet).close()
    assert quiet.getvalue() == ""
