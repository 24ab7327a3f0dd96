"""multiprocessing's locks, semaphores, events, conditions and queues, from any of its
contexts, in a pool's initargs and as task arguments, as the stdlib's executors take them
(tqdm's ``process_map`` passes a lock in initargs): the worker's object is the caller's."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

import corework as cw

#: A fork-context lock in initargs makes a launcher forked from this process, which may
#: have threads here (the test suite's): Python 3.12+ warns, as for multiprocessing's fork.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")

CONTEXTS = [None, "fork", "spawn", "forkserver"]
KINDS = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Queue"]

_given: Any = None


def keep(obj: Any) -> None:
    """An initializer: the object for :func:`probe_given`."""
    global _given
    _given = obj


def probe_given(_: object) -> Any:
    return probe(_given)


def probe(obj: Any) -> Any:
    """Use ``obj`` so the caller can tell it is its own: a lock the caller holds cannot be
    taken; a semaphore released here, an event set here, an item put here reach it."""
    kind = _kind(obj)
    if kind == "Event":
        obj.set()
        return "set"
    if hasattr(obj, "put"):
        obj.put(os.getpid())
        return "put"
    if kind == "Semaphore":
        obj.release()
        return "released"
    taken = obj.acquire(False)
    if taken:
        obj.release()
    return taken


def _kind(obj: Any) -> str:
    name = type(obj).__name__
    return {"EventProxy": "Event", "AcquirerProxy": "Lock"}.get(name, name)


def make(context: str | None, kind: str) -> Any:
    ctx = multiprocessing.get_context(context)
    if kind == "Semaphore":
        return ctx.Semaphore(0)
    return getattr(ctx, kind)()  # a BoundedSemaphore of 1: taken or not, as a lock


def check_shared(obj: Any, run: Any) -> None:
    """Run tasks on ``obj`` through ``run(n)`` (n tasks, two workers) and check they used
    the caller's object."""
    kind = _kind(obj)
    if kind == "Semaphore":
        assert run(2) == ["released", "released"]
        assert obj.acquire(timeout=10) and obj.acquire(timeout=10)
    elif kind == "Event":
        assert run(2) == ["set", "set"] and obj.is_set()
    elif hasattr(obj, "put"):
        assert run(2) == ["put", "put"]
        assert obj.get(timeout=10) != os.getpid() and obj.get(timeout=10) != os.getpid()
    else:
        with obj:  # held here: no task can take it
            assert run(2) == [False, False]
        assert run(1) == [True]  # one task: two at once could see each other's hold


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("kind", KINDS)
def test_in_initargs(context, kind):
    obj = make(context, kind)

    def run(n: int) -> list[Any]:
        with cw.Pool(2, engine="process", initializer=keep, initargs=(obj,)) as pool:
            return list(pool.map(probe_given, range(n), chunksize=1))

    check_shared(obj, run)


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
@pytest.mark.parametrize("kind", KINDS)
def test_as_task_arguments(context, kind):
    obj = make(context, kind)
    with cw.Pool(2, engine="process") as pool:
        check_shared(obj, lambda n: list(pool.map(probe, [obj] * n, chunksize=1)))


@pytest.mark.parametrize("kind", ["Lock", "Queue"])
def test_on_auto_and_cw_map(kind):
    obj = make(None, kind)

    def run(n: int) -> list[Any]:
        with cw.Pool(2, initializer=keep, initargs=(obj,)) as pool:  # engine="auto"
            return list(pool.map(probe_given, range(n), chunksize=1))

    check_shared(obj, run)
    obj = make("spawn", kind)
    check_shared(obj, lambda n: cw.map(probe, [obj] * n, workers=2, chunksize=1))


def test_manager_proxies_as_task_arguments():
    # spawn: the default context's Manager on 3.14 starts a forkserver, which outlives it
    with multiprocessing.get_context("spawn").Manager() as manager:
        for obj in (manager.Lock(), manager.Event(), manager.Queue()):
            with cw.Pool(2, engine="process") as pool:
                check_shared(obj, lambda n, obj=obj: list(pool.map(probe, [obj] * n,
                                                                   chunksize=1)))


def test_a_fork_lock_newer_than_the_workers_is_a_clear_error():
    with cw.Pool(1, engine="process") as pool:
        assert pool.submit(abs, -1).result() == 1  # the workers (and launcher) exist now
        lock = multiprocessing.get_context("fork").Lock()
        with pytest.raises(cw.SerializationError, match=r"fork context .* initargs"):
            pool.submit(probe, lock).result()
        assert pool.submit(abs, -2).result() == 2  # the pool goes on


def test_a_fork_lock_cannot_go_to_spawned_workers():
    lock = multiprocessing.get_context("fork").Lock()
    with pytest.raises(cw.SerializationError, match="start_method='spawn'"):
        cw.Pool(1, engine="process", start_method="spawn", initializer=keep, initargs=(lock,))


def test_a_fork_lock_older_than_the_launcher_goes_to_tasks_again_and_again():
    """The same fork-context lock in many chunks, and kept by the initializer too: each
    worker rebuilds it once (a copy's end would unmap the memory every other copy uses)."""
    lock = multiprocessing.get_context("fork").Lock()
    # a launcher of the pool's own, forked after the lock: its workers inherit it
    with cw.Pool(1, engine="process", start_method="fork-caller", initializer=keep,
                 initargs=(lock,)) as pool:
        for _ in range(3):
            assert pool.submit(probe, lock).result() is True
            assert pool.submit(probe_given, None).result() is True
        with lock:
            assert pool.submit(probe, lock).result() is False
            assert pool.submit(probe_given, None).result() is False


def test_auto_runs_a_map_over_a_fork_lock_on_threads_as_before():
    lock = multiprocessing.get_context("fork").Lock()
    with cw.Pool(1, engine="process") as pool:
        pool.submit(abs, -1).result()  # the process's launcher predates the lock
    with pytest.warns(cw.CoreworkWarning, match="on threads"):
        assert cw.map(probe, [lock] * 4, workers=2) == [True] * 4


def test_a_queue_in_many_queued_tasks_costs_two_descriptors():
    queue = multiprocessing.get_context("spawn").Queue()
    before = len(os.listdir("/proc/self/fd"))
    with cw.Pool(1, engine="process") as pool:
        futures = [pool.submit(probe, queue) for _ in range(300)]
        during = len(os.listdir("/proc/self/fd"))
        assert [f.result() for f in futures] == ["put"] * 300
    assert during - before < 40  # the pool's own sockets, not 600 duplicates
    assert sorted(queue.get(timeout=10) for _ in range(300))


def test_a_release_from_a_finalizer_while_the_lock_is_held_never_waits():
    """A message's duplicates are let go of in a finalizer, which a garbage collection may
    run inside the duplicates' own locked work (CI's 3.13t run deadlocked there)."""
    from corework.transport.inherited import _Duplicates

    duplicates = _Duplicates()
    read_end, write_end = os.pipe()
    try:
        first, second = duplicates.take(read_end), duplicates.take(write_end)
        with duplicates._lock:  # as when a collection interrupts take() or a release
            duplicates.release([first])  # returns at once: queued
            os.fstat(first)  # not closed yet: the lock's holder settles it
        duplicates.release([second])
        for closed in (first, second):
            with pytest.raises(OSError):
                os.fstat(closed)
    finally:
        os.close(read_end)
        os.close(write_end)
