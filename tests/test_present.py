"""Workers are born from the caller's present: its environment, working directory,
sys.path and umask as they are when each worker starts, the libraries it imported since
(imported once, by the launcher), and none of its file descriptors. The launcher ends
with its caller, whoever else holds its socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import corework as cw
from tests import present_tasks
from tests.helpers import ROOT_ENV, alive, gone_within

GRACE_SECONDS = 10.0  # a deadlock tripwire, not a timing assumption
VARIABLE = "COREWORK_TEST_PRESENT"


@pytest.fixture
def changed_present(tmp_path, monkeypatch):
    """Change the caller's environment, directory, sys.path and umask; undo them after."""
    def change(tag: str) -> tuple[str, str, str, int]:
        directory = tmp_path / tag
        directory.mkdir()
        (directory / "data.txt").write_text(tag)
        monkeypatch.setenv(VARIABLE, tag)
        monkeypatch.chdir(directory)
        monkeypatch.syspath_prepend(str(directory))
        mask = 0o027 if tag == "second" else 0o077
        os.umask(mask)
        return tag, str(directory), str(directory), mask

    old_mask = os.umask(0o022)
    os.umask(old_mask)
    yield change
    os.umask(old_mask)


def _check(seen: tuple[str | None, str, list[str], int | None],
           expected: tuple[str, str, str, int]) -> None:
    value, cwd, path, mask = seen
    assert (value, cwd, mask) == (expected[0], expected[1], expected[3])
    assert expected[2] in path


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")  # fork-caller, 3.12+
@pytest.mark.parametrize("start_method", ["fork", "spawn", "fork-caller"])
@pytest.mark.parametrize("engine", ["process", "auto"])
def test_each_pool_sees_the_caller_as_it_is_now(engine, start_method, changed_present):
    start = {"start_method": start_method} if engine == "process" else {}
    first = changed_present("first")
    with cw.Pool(2, engine=engine, **start) as pool:
        _check(pool.submit(present_tasks.present, VARIABLE).result(), first)
    second = changed_present("second")
    with cw.Pool(2, engine=engine, **start) as pool:
        _check(pool.submit(present_tasks.present, VARIABLE).result(), second)
        assert pool.submit(present_tasks.read_relative, "data.txt").result() == "second"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")  # 3.12+, as for mp
def test_fork_caller_workers_have_every_modules_state_of_the_pools_start(monkeypatch):
    """As multiprocessing's fork gives (dask's test_custom_context_used_python3_posix):
    what the caller set in a module, or in sys.modules, after the launcher was made."""
    import multiprocessing

    import corework.futures

    with cw.Pool(1, engine="process") as pool:
        pool.submit(abs, -1).result()  # the process's launcher exists from here on
    monkeypatch.setitem(sys.modules, "corework_test_fake_module", 1)
    monkeypatch.setattr(present_tasks, "STATE", "set after the launcher")
    with cw.Pool(2, engine="process", start_method="fork-caller") as pool:
        assert list(pool.map(present_tasks.module_state, range(2))) == [
            (True, "set after the launcher")] * 2
    fork = multiprocessing.get_context("fork")
    with corework.futures.ProcessPoolExecutor(2, mp_context=fork) as executor:
        assert executor.submit(present_tasks.module_state).result() == (
            True, "set after the launcher")
    with cw.Pool(1, engine="process") as pool:  # the process's launcher: made before
        assert pool.submit(present_tasks.module_state).result() == (False, "as imported")


def test_cw_map_with_no_engine_sees_the_caller_as_it_is_now(changed_present):
    changed_present("first")
    assert cw.map(present_tasks.read_relative, ["data.txt"]) == ["first"]
    second = changed_present("second")
    _check(cw.map(present_tasks.present, [VARIABLE])[0], second)
    assert cw.map(present_tasks.read_relative, ["data.txt"]) == ["second"]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_replacement_worker_sees_the_caller_as_it_is_now(start_method, changed_present,
                                                          tmp_path):
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    first = changed_present("first")
    with cw.Pool(1, engine="process", max_tasks_per_worker=1,
                 start_method=start_method) as pool:
        running = pool.submit(present_tasks.present_after, VARIABLE, str(fifo))
        second = changed_present("second")  # while the first worker runs its one task
        with open(fifo, "w"):
            pass
        _check(running.result(), first)
        _check(pool.submit(present_tasks.present, VARIABLE).result(), second)


def test_a_removed_variable_is_removed_in_workers(monkeypatch):
    monkeypatch.setenv(VARIABLE, "set")
    assert cw.map(present_tasks.present, [VARIABLE], engine="process")[0][0] == "set"
    monkeypatch.delenv(VARIABLE)
    assert cw.map(present_tasks.present, [VARIABLE], engine="process")[0][0] is None


def _script(body: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(body)], env=ROOT_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("threads_first", [False, True], ids=["forked", "spawned"])
def test_the_launcher_holds_none_of_the_callers_descriptors(threads_first):
    """A pipe and a listening socket the caller had open at its first pool, then closed:
    the pipe's reader sees end-of-file, the socket refuses connections, and no process of
    corework's holds either."""
    caller = _script(f"""
        import os, select, socket, threading, time, corework as cw
        from corework.engines.process import launchers as _launcher
        if {threads_first}:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        r, w = os.pipe()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inode = os.fstat(w).st_ino
        with cw.Pool(2, engine="process") as pool:
            pool.submit(int).result()
            pids = [_launcher._client.pid, *pool._pids()]
            os.close(w)
            listener.close()
            eof = select.select([r], [], [], 10)[0] and os.read(r, 1) == b""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                refused = False
            except ConnectionRefusedError:
                refused = True
            held = [pid for pid in pids for fd in os.listdir(f"/proc/{{pid}}/fd")
                    if os.stat(f"/proc/{{pid}}/fd/{{fd}}").st_ino == inode]
        print(bool(eof), refused, held)
    """)
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, err
    assert out.split() == ["True", "True", "[]"]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_program_a_task_starts_holds_no_descriptor_of_corework(start_method):
    with cw.Pool(1, engine="process", start_method=start_method) as pool:
        pid, fds = pool.submit(present_tasks.start_program, 60).result()
    try:
        assert fds == [0, 1, 2]
        assert alive([pid]) == [pid], "leaving the pool waited for the program to end"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_worker_that_started_a_program_and_died_is_reported_crashed():
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with cw.Pool(1, engine="process") as pool:
        future = pool.submit(present_tasks.start_program_and_exit, 60)
        with pytest.raises(cw.WorkerCrashed, match="exit code 3"):
            future.result(timeout=GRACE_SECONDS)
        assert pool.submit(abs, -1).result(timeout=GRACE_SECONDS) == 1
    for process in psutil.process_iter(["name", "cmdline"]):  # the shell's "sleep 60"
        if process.info["cmdline"] == ["sleep", "60"] and process.pid not in before:
            process.kill()


def _caller_with_a_child(handler_hangs: bool, ending: str) -> subprocess.Popen[str]:
    """A caller with a pool that then forks a child that sleeps (holding what it
    inherited: with a hanging at-fork handler, corework's own never runs there). It
    prints its launcher's and workers' pids, then the child's."""
    return _script(f"""
        import os, time
        forking = [False]
        def after_in_child():  # registered before corework's, so it runs first
            if forking[0]:
                print("child", os.getpid(), flush=True)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)  # the test reads the caller's output to its end
                os.dup2(devnull, 2)
                if {handler_hangs}:
                    time.sleep(60)
        os.register_at_fork(after_in_child=after_in_child)
        import corework as cw
        from corework.engines.process import launchers as _launcher
        pool = cw.Pool(2, engine="process")
        pool.submit(int).result()
        print(_launcher._client.pid, *pool._pids(), flush=True)
        forking[0] = True
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forking[0] = False
        {ending}
    """)


def _read_pids(caller: subprocess.Popen[str]) -> tuple[list[int], int]:
    assert caller.stdout is not None
    pids = [int(pid) for pid in caller.stdout.readline().split()]
    child = int(caller.stdout.readline().split()[1])
    assert len(pids) == 3
    return pids, child


@pytest.mark.parametrize("handler_hangs", [False, True], ids=["child", "hung-at-fork"])
def test_the_launcher_dies_with_a_sigkilled_caller_whoever_holds_its_socket(handler_hangs):
    caller = _caller_with_a_child(handler_hangs, "time.sleep(60)")
    with caller:
        pids, child = _read_pids(caller)
        try:
            caller.send_signal(signal.SIGKILL)
            caller.communicate()
            assert gone_within(pids, GRACE_SECONDS), "the launcher outlived its caller"
        finally:
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("handler_hangs", [False, True], ids=["child", "hung-at-fork"])
def test_a_normal_exit_waits_for_no_child_the_caller_forked(handler_hangs):
    caller = _caller_with_a_child(handler_hangs, "pool.shutdown()")
    with caller:
        pids, child = _read_pids(caller)
        try:
            _, err = caller.communicate(timeout=30)
            assert caller.returncode == 0, err
            assert gone_within(pids, GRACE_SECONDS), "the launcher outlived its caller"
        finally:
            os.kill(child, signal.SIGKILL)


def test_workers_start_with_the_libraries_the_caller_imported(tmp_path):
    """A library module the caller imported is loaded by the launcher, once, so a later
    pool's workers start with it; the caller's own modules are never imported there."""
    (tmp_path / "own_module_of_the_caller.py").write_text("VALUE = 1\n")
    caller = _script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import corework as cw
        from corework.engines.process import launchers as _launcher
        from tests import present_tasks
        names = ["xml.dom.minidom", "own_module_of_the_caller"]
        with cw.Pool(1, engine="process") as pool:
            before = pool.submit(present_tasks.modules, names).result()
        import xml.dom.minidom, own_module_of_the_caller
        with cw.Pool(1, engine="process") as pool:
            pool.submit(int).result()
        assert _launcher._client.wait_warm(60)
        with cw.Pool(1, engine="process") as pool:
            after = pool.submit(present_tasks.modules, names).result()
        print(before, after)
    """)
    out, err = caller.communicate(timeout=120)
    assert caller.returncode == 0, err
    assert out.strip() == "[False, False] [True, False]"


def test_a_library_that_starts_a_thread_stops_the_launcher_forking(tmp_path):
    """The launcher must stay single-threaded: a module that starts a thread as it is
    imported there makes it execute fresh workers, and the next pool gets a new launcher
    that leaves the module out; a module that fails to import is skipped."""
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    (tmp_path / "fails_to_import.py").write_text("import sys\n")
    caller = _script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import corework as cw
        from corework.engines.process import launchers as _launcher
        from corework.engines.process import warmup as _warmup
        _warmup._library_roots = lambda: ({str(tmp_path)!r} + "/",)
        import fails_to_import
        fails_to_import.__spec__.origin  # it loaded here; in the launcher it will not
        open({str(tmp_path / "fails_to_import.py")!r}, "w").write("raise ImportError('no')")
        import starts_a_thread
        with cw.Pool(1, engine="process") as pool:
            pool.submit(int).result()
            first = _launcher._client
            assert first.wait_warm(60)
            print(first.tainted_by)
            assert pool.submit(abs, -2).result() == 2  # its replacement workers are spawned
        with cw.Pool(1, engine="process") as pool:
            assert pool.submit(abs, -3).result() == 3
            second = _launcher._client
            assert second.wait_warm(60)
            print(second is not first, second.tainted_by)
    """)
    out, err = caller.communicate(timeout=120)
    assert caller.returncode == 0, err
    assert out.split() == ["starts_a_thread", "True", "None"]


def test_an_import_cut_short_stops_the_launcher_forking():
    """A module whose import in the launcher ran past its bound (or failed with a C
    extension half-loaded) could leave workers a half-imported library: that launcher
    forks no more, and the next pool gets a new one."""
    caller = _script("""
        import corework as cw
        from corework.engines.process import launchers as _launcher
        from corework.engines.process import warmup as _warmup
        _warmup.IMPORT_SECONDS = 1e-6  # the forked launcher inherits it: every import runs over
        with cw.Pool(1, engine="process") as pool:  # the launcher is forked
            pool.submit(int).result()
        import xml.dom.minidom  # then told of this one
        with cw.Pool(1, engine="process") as pool:
            pool.submit(int).result()
            first = _launcher._client
            assert first.wait_warm(60)
            print(first.tainted_by is not None)
        with cw.Pool(1, engine="process") as pool:
            assert pool.submit(abs, -3).result() == 3
            print(_launcher._client is not first)
    """)
    out, err = caller.communicate(timeout=120)
    assert caller.returncode == 0, err
    assert out.split() == ["True", "True"]


def test_an_environment_too_big_for_one_message_costs_no_pool(monkeypatch):
    """A 300 KB value (100,000 three-byte characters) cannot travel to the launcher: new
    workers go without it, and the pools already running lose nothing."""
    with cw.Pool(1, engine="process") as running:
        before = running.submit(present_tasks.present, VARIABLE)
        monkeypatch.setenv("COREWORK_TEST_HUGE", "€" * 100_000)
        monkeypatch.setenv(VARIABLE, "small")
        with cw.Pool(1, engine="process") as pool:
            seen = pool.submit(present_tasks.present, VARIABLE).result(timeout=GRACE_SECONDS)
        assert seen[0] == "small"
        before.result(timeout=GRACE_SECONDS)
        assert running.submit(abs, -1).result(timeout=GRACE_SECONDS) == 1
