"""Workers never outlive their caller, the caller is never forked once it has threads,
and process workers never oversubscribe the cores with native thread pools."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import corework as cw
from corework.engines import default_workers
from tests.helpers import gone_within

GRACE_SECONDS = 10.0


def _run_script(body: str) -> subprocess.Popen[str]:
    script = textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("threads_first", [False, True], ids=["forked", "spawned"])
def test_workers_die_when_the_caller_is_sigkilled(threads_first):
    caller = _run_script(f"""
        import threading, time, corework as cw
        from corework.engines.process import launchers as _launcher
        if {threads_first}:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        pool = cw.Pool(2, engine="process")
        pool.submit(int).result()
        print(_launcher._client.pid, *pool._pids(), flush=True)
        time.sleep(60)
    """)
    with caller:
        assert caller.stdout is not None
        pids = [int(pid) for pid in caller.stdout.readline().split()]
        assert len(pids) == 3
        caller.send_signal(signal.SIGKILL)
        caller.communicate()
    assert gone_within(pids, GRACE_SECONDS), "launcher or workers outlived their caller"


def test_a_caller_with_threads_is_never_forked():
    """With a thread running, the launcher must be spawned: Python 3.12+ would warn."""
    caller = _run_script("""
        import threading, warnings, corework as cw
        warnings.simplefilter("error")
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        print(cw.map(abs, [-1, -2], engine="process"))
    """)
    with caller:
        out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, err
    assert out.strip() == "[1, 2]"


def test_a_forked_child_of_the_caller_gets_its_own_launcher():
    assert cw.map(abs, [-1], engine="process") == [1]  # the parent's launcher exists now
    pid = os.fork()
    if pid == 0:  # the child: single-threaded copy holding the parent's launcher handle
        code = 0 if cw.map(abs, [-2], engine="process") == [2] else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_native_thread_pools_are_capped_in_process_workers():
    pytest.importorskip("numpy")
    workers = 2

    def blas_threads(_):
        import numpy  # noqa: F401 - loads the BLAS library
        from threadpoolctl import threadpool_info

        return {pool["num_threads"] for pool in threadpool_info()}

    with cw.Pool(workers, engine="process") as pool:
        counts = set().union(*pool.map(blas_threads, range(workers)))
    assert counts <= {max(1, default_workers() // workers)}


def test_native_thread_cap_can_be_turned_off():
    with cw.Pool(1, engine="process", native_threads=None) as pool:
        assert pool.submit(os.environ.get, "OMP_NUM_THREADS").result() == os.environ.get(
            "OMP_NUM_THREADS")


def test_a_pool_that_cannot_start_its_workers_leaves_nothing_behind(monkeypatch):
    from corework.engines.process import launchers as _launcher

    def refuse(self, socks, mode, timeout=60.0, *, warm=False):
        raise cw.CoreworkError("could not start a worker process: no more processes")

    monkeypatch.setattr(_launcher.LauncherClient, "start_workers", refuse)
    with pytest.raises(cw.CoreworkError, match="no more processes"):
        cw.Pool(2, engine="process")


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_ctrl_c_ends_a_program_whose_pool_is_not_in_a_with_block(engine, tmp_path):
    """As leaving a ``with`` block on Ctrl-C: running tasks are stopped, not waited for
    (a normal end of the program still waits for them, as concurrent.futures does)."""
    marker = tmp_path / "finished"
    caller = _run_script(f"""
        import os, signal, threading, time, corework as cw
        from pathlib import Path
        def task(path):
            time.sleep(60)
            Path(path).write_text("done")
        pool = cw.Pool(1, engine={engine!r})
        pool.submit(task, {str(marker)!r})
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
    """)
    with caller:
        _, err = caller.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    assert caller.returncode != 0
    assert not marker.exists()


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_a_users_native_thread_variables_win_over_the_automatic_cap(engine, monkeypatch):
    pytest.importorskip("numpy")
    from corework.engines.process.warmup import NATIVE_THREAD_VARIABLES

    for name in NATIVE_THREAD_VARIABLES:  # as the user left them: only these two set
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")

    def variables(_):
        return os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")

    with cw.Pool(2, engine=engine) as pool:
        assert pool.submit(variables, 0).result() == ("1", None)
