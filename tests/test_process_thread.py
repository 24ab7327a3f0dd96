"""cw.Process and cw.Thread: the lesson's building blocks, with results and a stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import corework as cw
from tests.helpers import fail_on


def _wait_forever(fifo: str) -> None:
    with open(fifo, "w") as started:
        started.write("x")
    threading.Event().wait()


def test_process_returns_the_target_result():
    process = cw.Process(target=lambda a, b: (os.getpid(), a * b), args=(6,), kwargs={"b": 7})
    assert process.exitcode is None and not process.is_alive()
    process.start()
    pid, product = process.result()
    assert product == 42 and pid != os.getpid()
    process.join()
    assert process.exitcode == 0 and not process.is_alive()


def test_process_reraises_the_target_exception():
    process = cw.Process(target=fail_on, args=(3,))
    process.start()
    with pytest.raises(ValueError, match="bad item 3"):
        process.result()
    assert process.exitcode == 1


@pytest.fixture
def blocked_process(tmp_path):
    """A started cw.Process that is known (through a FIFO) to be running its target."""
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    process = cw.Process(target=_wait_forever, args=(str(fifo),))
    process.start()
    with open(fifo) as started:
        started.read()
    yield process
    if process.is_alive():
        process.kill()


def test_process_kill_stops_it_and_reports_the_signal(blocked_process):
    assert blocked_process.is_alive()
    pid = blocked_process.pid
    blocked_process.kill()
    assert not blocked_process.is_alive()
    assert blocked_process.exitcode == -9
    with pytest.raises(cw.Cancelled):
        blocked_process.result()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_process_join_with_timeout_returns_while_running(blocked_process):
    blocked_process.join(timeout=0.01)
    assert blocked_process.is_alive() and blocked_process.exitcode is None


def test_process_crash_reports_the_exit_code():
    process = cw.Process(target=os._exit, args=(7,))
    process.start()
    with pytest.raises(cw.WorkerCrashed, match="exit code 7"):
        process.result()
    assert process.exitcode == 7


def test_process_must_be_started_once():
    process = cw.Process(target=int)
    with pytest.raises(RuntimeError, match="start"):
        process.result()
    process.start()
    with pytest.raises(RuntimeError, match="once"):
        process.start()
    process.join()


def test_thread_returns_the_target_result():
    thread = cw.Thread(target=threading.get_ident)
    thread.start()
    assert thread.result() != threading.get_ident()
    thread.join()
    assert not thread.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_thread_reraises_the_target_exception():
    thread = cw.Thread(target=fail_on, args=(3,))
    thread.start()
    with pytest.raises(ValueError, match="bad item 3"):
        thread.result()


def test_thread_cancel_interrupts_pure_python_code():
    started = threading.Event()

    def spin():
        started.set()
        while True:
            pass

    thread = cw.Thread(target=spin)
    thread.start()
    started.wait()
    assert thread.cancel()
    with pytest.raises(cw.Cancelled):
        thread.result()
    thread.join(60)
    assert not thread.is_alive()


def test_thread_cancel_is_not_swallowed_by_except_exception():
    started = threading.Event()
    swallowed = []

    def stubborn():
        started.set()
        while True:
            try:
                while True:
                    pass
            except Exception as exc:
                swallowed.append(exc)

    thread = cw.Thread(target=stubborn)
    thread.start()
    started.wait()
    thread.cancel()
    thread.join(60)
    assert not thread.is_alive() and swallowed == []


def test_thread_cancelled_before_start_never_runs():
    ran = []
    thread = cw.Thread(target=ran.append, args=(1,))
    assert thread.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        thread.start()
    with pytest.raises(cw.Cancelled):
        thread.result()
    assert ran == []


def test_cancel_after_finish_returns_false():
    thread = cw.Thread(target=int)
    thread.start()
    thread.join()
    assert thread.cancel() is False
    assert thread.result() == 0


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_an_uncaught_exception_is_printed_as_the_standard_library_does():
    done = _run_script("""
        import corework as cw

        def bad():
            raise ValueError("boom")

        p = cw.Process(target=bad)
        p.start()
        p.join()
        t = cw.Thread(target=bad)
        t.start()
        t.join()
        named = cw.Thread(target=bad, name="worker-a")
        named.start()
        named.join()
        for stopped in (p, t, named):
            try:
                stopped.result()
            except ValueError as exc:
                print("re-raised:", exc)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("re-raised: boom") == 3
    blocks = done.stderr.split("ValueError: boom\n")
    assert blocks[0].startswith("Process Process-1:\nTraceback (most recent call last):\n")
    assert blocks[1].startswith("Exception in thread Thread-1 (bad):\nTraceback")
    assert blocks[2].startswith("Exception in thread worker-a:\nTraceback")
    # From the target's frame on: none of corework's own frames.
    assert "corework" not in done.stderr.replace("import corework", "")
    assert all('line 5, in bad' in block for block in blocks[:3])


def test_process_name_and_daemon():
    process = cw.Process(target=int, name="loader", daemon=True)
    assert (process.name, process.daemon) == ("loader", True)
    assert cw.Process(target=int).name.startswith("Process-")


def test_a_daemon_process_is_killed_at_exit_and_others_are_waited_for():
    done = _run_script("""
        import time
        import corework as cw
        started = time.monotonic()
        cw.Process(target=time.sleep, args=(60,), daemon=True).start()
        cw.Process(target=time.sleep, args=(0.5,)).start()
        time.sleep(0.2)
    """)
    assert done.returncode == 0, done.stderr


def test_process_terminate_sends_sigterm_and_result_says_so(blocked_process):
    blocked_process.terminate()
    assert blocked_process.exitcode == -15
    with pytest.raises(cw.Cancelled, match=r"terminated by Process.terminate\(\) \(SIGTERM\)"):
        blocked_process.result()


def test_process_result_after_kill_says_it_was_killed(blocked_process):
    blocked_process.kill()
    with pytest.raises(cw.Cancelled, match=r"killed by Process.kill\(\)") as caught:
        blocked_process.result()
    assert "Pool" not in str(caught.value)


def test_thread_name_daemon_and_how_it_was_stopped():
    started = threading.Event()

    def spin():
        started.set()
        while True:
            time.sleep(0.001)

    for stop, said in (("kill", "killed by Thread.kill()"),
                       ("terminate", "terminated by Thread.terminate()")):
        started.clear()
        thread = cw.Thread(target=spin, name=f"spinner-{stop}", daemon=True)
        assert (thread.name, thread.daemon) == (f"spinner-{stop}", True)
        thread.start()
        started.wait()
        assert getattr(thread, stop)() is True
        with pytest.raises(cw.Cancelled, match=re.escape(said)):
            thread.result()
        thread.join(60)
        assert not thread.is_alive()
