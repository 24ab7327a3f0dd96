"""The concurrent.futures contract beyond CPython's own tests (tests/conformance runs
those): no stale references, Python 3.14's executor API, and the lifetime promises —
pending work runs at exit, a dropped pool never blocks exit, a fork inside a task never
waits on the parent's pools, initializer globals reach tasks, Manager proxies work."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import itertools
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

import corework as cw
from tests.helpers import ROOT_ENV, skip_on_dask


class Payload:
    """An object whose life a test watches with a weak reference."""

    def __init__(self, size: int = 0) -> None:
        self.data = bytes(size)


def make_payload(_: object = None) -> Payload:
    return Payload()


def take(payload: Payload) -> int:
    return len(payload.data)


def collected(ref: weakref.ref) -> bool:
    """Whether the object is gone. Free-threaded CPython may merge a count decremented
    by another thread only later (biased reference counting), so collect a few times, as
    CPython's own test of this does."""
    for _ in range(50):
        gc.collect()
        if ref() is None:
            return True
        threading.Event().wait(0.05)
    return False


# ------------------------------------------------------------------ no stale references


def test_a_finished_submit_holds_neither_argument_nor_result(engine):
    with cw.Pool(2, engine=engine) as pool:
        argument = Payload()
        future = pool.submit(take, argument)
        assert future.result() == 0
        watched = weakref.ref(argument)
        del argument
        assert collected(watched)
        future = pool.submit(make_payload)
        result = weakref.ref(future.result())
        del future
        assert collected(result)


def test_a_discarded_future_releases_its_bound_method(engine):
    skip_on_dask(engine, "Dask keeps a finished task's data until its future is released")
    with cw.Pool(1, engine=engine) as pool:
        owner = Payload()
        gone = threading.Event()
        watched = weakref.ref(owner, lambda _: gone.set())
        pool.submit(owner.__sizeof__)  # the future is dropped at once
        del owner
        pool.submit(len, "x").result()  # the first task is done by now
        gc.collect()
        assert gone.is_set() and watched() is None


@pytest.mark.parametrize("how", ["map", "imap", "starmap"])
def test_map_results_are_not_held_once_handed_out(engine, how):
    with cw.Pool(2, engine=engine) as pool:
        if how == "map":
            results = pool.map(make_payload, range(10))
        elif how == "imap":
            results = pool.imap(make_payload, range(10))
        else:
            results = iter(pool.starmap(make_payload, [(i,) for i in range(10)]))
        for result in results:
            watched = weakref.ref(result)
            del result
            if how != "starmap":  # starmap returns a list: the caller holds it
                assert collected(watched)


def crash_once(marker: str, payload: Payload) -> int:
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(3)
    return len(payload.data)


def test_arguments_of_a_retried_chunk_are_released(tmp_path):
    marker = str(tmp_path / "crashed")
    with cw.Pool(1, engine="process", retries=1) as pool:
        payloads = [Payload() for _ in range(4)]
        watched = [weakref.ref(p) for p in payloads]
        calls = [(marker, p) for p in payloads]
        del payloads
        assert pool.starmap(crash_once, calls, chunksize=4) == [0] * 4  # split, then run
        del calls
        assert all(collected(ref) for ref in watched)


# ------------------------------------------------------------------ Python 3.14's API


def test_shutdown_cancel_futures_cancels_what_has_not_started(engine, tmp_path):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    with cw.Pool(1, engine=engine) as pool:
        first = pool.submit(announce_then_sleep, str(fifo))
        with open(fifo) as started:
            assert started.read() == "x"  # running: it is not cancelled
        rest = [pool.submit(len, "ab") for _ in range(10)]
        pool.shutdown(wait=False, cancel_futures=True)
        assert first.result(timeout=60) == "slept"
    assert all(future.cancelled() for future in rest)


def announce_then_sleep(fifo: str) -> str:
    import time

    with open(fifo, "w") as started:
        started.write("x")
    time.sleep(0.2)
    return "slept"


def test_map_is_a_generator_whose_close_cancels_the_rest():
    gate = threading.Event()
    started: list[str] = []

    def note_and_wait(name: str) -> str:
        started.append(name)
        gate.wait()
        return name

    with cw.Pool(1, engine="thread") as pool:
        first = pool.submit(note_and_wait, "first")
        try:
            with contextlib.closing(pool.map(note_and_wait, ["second", "third"],
                                             timeout=0)) as results:
                with pytest.raises(concurrent.futures.TimeoutError):  # 3.10: not builtin
                    next(results)
        finally:
            gate.set()
        assert first.result() == "first"
    assert started == ["first"]


def test_map_buffersize_reads_an_endless_input_lazily():
    with cw.Pool(2, engine="process") as pool:
        results = pool.map(abs, itertools.count(), buffersize=4)
        assert [next(results) for _ in range(100)] == list(range(100))
        results.close()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_map_buffersize_is_checked_as_the_stdlib_does(bad, error):
    with cw.Pool(1, engine="thread") as pool, pytest.raises(error, match="buffersize"):
        pool.map(abs, [1], buffersize=bad)


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers_stop_running_tasks(how, tmp_path):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    pool = cw.Pool(1, engine="process")
    running = pool.submit(announce_then_wait, str(fifo))
    waiting = pool.submit(len, "x")
    with open(fifo) as started:
        assert started.read() == "x"
    getattr(pool, how)()
    assert waiting.cancelled()
    with pytest.raises(cw.Cancelled, match=how):
        running.result(timeout=60)
    with pytest.raises(cw.PoolClosed):
        pool.submit(len, "x")


def announce_then_wait(fifo: str) -> None:
    with open(fifo, "w") as started:
        started.write("x")
    threading.Event().wait()


def test_serialization_errors_are_pickling_errors():
    with cw.Pool(1, engine="process") as pool, pytest.raises(pickle.PicklingError):
        pool.submit(len, threading.Lock())


@pytest.mark.timeout(30)
def test_a_second_shutdown_returns_at_once(monkeypatch):
    # Imported here, not at the top: tasks of this module run in 3.12's sub-interpreters,
    # which cannot load what the process engine needs (ctypes).
    from corework.engines.process import handle as _worker_handle

    monkeypatch.setattr(_worker_handle, "EXIT_REPORT_TIMEOUT", 60.0)  # a stall would show
    pool = cw.Pool(2, engine="process")
    assert pool.submit(len, "ab").result() == 2
    pool.shutdown()
    pool.shutdown()
    pool.shutdown(wait=False)


# ------------------------------------------------------------------ lifetimes (child interpreters)


def run_script(tmp_path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=60, env=ROOT_ENV)


ENGINES_HERE = ["process", "thread"] + (["interpreter"] if sys.version_info >= (3, 13) else [])


@pytest.mark.parametrize("engine", ENGINES_HERE)
def test_work_left_by_shutdown_without_wait_runs_before_exit(tmp_path, engine):
    done = run_script(tmp_path, """
        import sys, time
        import corework as cw

        def slow(x):
            time.sleep(0.2)
            sys.stdout.write(f"ran {x}\\n")  # one write: lines from two threads never mix

        if __name__ == "__main__":
            pool = cw.Pool(1, engine=sys.argv[1])
            pool.submit(slow, 1)
            pool.submit(slow, 2)
            pool.shutdown(wait=False)
            sys.stdout.write("main done\\n")
    """, engine)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["main done", "ran 1", "ran 2"]


@pytest.mark.parametrize("engine", ENGINES_HERE)
def test_a_pool_dropped_without_shutdown_finishes_and_never_blocks_exit(tmp_path, engine):
    done = run_script(tmp_path, """
        import gc, sys
        import corework as cw

        def task(x):
            sys.stdout.write(f"ran {x}\\n")  # one write: lines from two threads never mix

        if __name__ == "__main__":
            pool = cw.Pool(1, engine=sys.argv[1])
            pool.submit(task, 1)
            del pool
            gc.collect()
            sys.stdout.write("dropped\\n")
    """, engine)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == ["1", "dropped", "ran"]


@pytest.mark.skipif(sys.version_info < (3, 13), reason="3.12 cannot interrupt a sub-interpreter")
def test_exit_past_a_killed_sub_interpreter_task_stuck_in_c_says_so_and_ends(tmp_path):
    done = run_script(tmp_path, """
        import os, threading, time
        from pathlib import Path
        import corework as cw
        from corework.engines.local import interpreter

        def stuck(fd):
            os.read(fd, 1)  # in C code for ever (no byte comes): no interrupt goes off

        if __name__ == "__main__":
            interpreter.EXIT_WAIT_SECONDS = 0.2
            read_end, write_end = os.pipe()
            with cw.Pool(1, engine="interpreter") as pool:
                pool.submit(stuck, read_end)
                slot, = (t for t in threading.enumerate() if t.name.startswith("corework-"))
                wchan = Path(f"/proc/self/task/{slot.native_id}/wchan")
                while not wchan.read_text().endswith("pipe_read"):  # it blocks there now
                    time.sleep(0.001)
                pool.kill()
            print("left the pool")
    """)
    assert done.stdout == "left the pool\n"
    assert done.returncode == 1
    assert "still blocked in C code" in done.stderr and "engine='process'" in done.stderr


def test_a_fork_inside_a_task_does_not_wait_on_the_parents_pools(tmp_path):
    done = run_script(tmp_path, """
        import multiprocessing, warnings
        import corework as cw

        def fork_and_wait(_):
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: known
            child = multiprocessing.get_context("fork").Process(target=print, args=("child",))
            child.start()  # the child finishes threading's exit handlers: ours among them
            child.join()
            return child.exitcode

        if __name__ == "__main__":
            for engine in ("thread", "process"):
                with cw.Pool(1, engine=engine) as pool:
                    print(engine, pool.submit(fork_and_wait, 0).result(), flush=True)
    """)
    assert done.returncode == 0, done.stderr
    assert "thread 0" in done.stdout and "process 0" in done.stdout


def test_initializer_globals_reach_tasks_from_main_on_every_start_method(tmp_path):
    done = run_script(tmp_path, """
        import corework as cw

        MODEL = None

        def load(name):
            global MODEL
            MODEL = f"loaded {name}"

        def predict(x):
            return MODEL, x

        if __name__ == "__main__":
            for method in ("fork", "spawn"):
                with cw.Pool(2, engine="process", start_method=method,
                             initializer=load, initargs=("m",)) as pool:
                    print(method, list(pool.map(predict, range(3))), flush=True)
    """)
    assert done.returncode == 0, done.stderr
    for method in ("fork", "spawn"):
        assert f"{method} [('loaded m', 0), ('loaded m', 1), ('loaded m', 2)]" in done.stdout


def test_manager_proxies_work_whichever_way_the_launcher_started(tmp_path):
    done = run_script(tmp_path, """
        import multiprocessing, sys, threading
        import corework as cw

        def put(queue, x):
            queue.put(x)
            return x

        if __name__ == "__main__":
            if sys.argv[1] == "spawned":  # a thread now: the launcher must be spawned
                gate = threading.Event()
                threading.Thread(target=gate.wait, daemon=True).start()
            with multiprocessing.Manager() as manager:
                queue = manager.Queue()
                for method in ("fork", "spawn"):
                    with cw.Pool(1, engine="process", start_method=method) as pool:
                        pool.submit(put, queue, method).result()
                    print(queue.get(timeout=30), flush=True)
    """, "spawned")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork", "spawn"]


MAIN_ENGINES = ["process", "auto"] + (["interpreter"] if sys.version_info >= (3, 12) else [])


@pytest.mark.parametrize("engine", MAIN_ENGINES)
def test_a_global_an_initializer_of_main_sets_is_seen_by_later_tasks(tmp_path, engine):
    """As CPython 3.14's own test_init_with___main___global asks of its executors: the
    worker's ``__main__`` namespace is one, the caller's is untouched."""
    done = run_script(tmp_path, """
        import sys
        import corework as cw
        from corework.futures import ProcessPoolExecutor

        STATUS = "uninitialized"

        def init(value):
            global STATUS
            STATUS = value

        def status(_=None):
            return STATUS

        if __name__ == "__main__":
            engine = sys.argv[1]
            with cw.Pool(2, engine=engine, initializer=init, initargs=("pool",)) as pool:
                print(sorted(set(pool.map(status, range(4)))))
            if engine == "interpreter":
                from corework.futures import InterpreterPoolExecutor as Executor
            else:
                Executor = ProcessPoolExecutor
            with Executor(2, initializer=init, initargs=("executor",)) as executor:
                print(executor.submit(status).result())
            print(STATUS)
        """, engine)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["['pool']", "executor", "uninitialized"]
