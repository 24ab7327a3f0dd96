"""The peers' tests that check a private detail of loky or the standard library, per
suite, each with its reason (a test name, or a test name with its parameters)."""

from __future__ import annotations

_DASK_POOL_SET_GLOBALLY = (
    "the run sets one process pool in dask.config for every test (as a user would); "
    "this test asks dask to make its own pool (an initializer, a context) or runs the "
    "threaded scheduler, which takes that pool too: the standard library's "
    "ProcessPoolExecutor set the same way fails it as well")

_NESTED_IN_ANOTHER_BACKEND = (
    "names backend='corework' inside a task of another backend's worker (loky's, or a "
    "multiprocessing one), which never imported corework.joblib: joblib registers "
    "backends per process, so such a task must import corework.joblib itself (corework's "
    "own workers do: see test_a_nested_corework_parallel_finds_the_backend_in_the_worker)")
_LOKY_BY_NAME = (
    "asserts that prefer='processes' gives an instance of LokyBackend itself; with "
    "corework as the default backend joblib keeps corework's (process-based) backend")

SKIPS: dict[str, dict[str, str]] = {
    "joblib-default": {
        "test_nested_loop[loky-corework]": _NESTED_IN_ANOTHER_BACKEND,
        "test_nested_loop[back_compat_backend-corework]": _NESTED_IN_ANOTHER_BACKEND,
        "test_backend_hinting_and_constraints[parallel_config]": _LOKY_BY_NAME,
        "test_backend_hinting_and_constraints[parallel_backend]": _LOKY_BY_NAME,
    },
    "joblib-beside-loky": {
        "test_nested_loop[loky-corework]": _NESTED_IN_ANOTHER_BACKEND,
        "test_nested_loop[back_compat_backend-corework]": _NESTED_IN_ANOTHER_BACKEND,
    },
    "sklearn": {},
    "tqdm": {},
    "dask-executor": {},
    "dask-pool": {
        "test_process_initializer[threading-None-expected_results0]": _DASK_POOL_SET_GLOBALLY,
        "test_process_initializer[processes-proc_init-expected_results2]":
            _DASK_POOL_SET_GLOBALLY,
        "test_custom_context_used_python3_posix": _DASK_POOL_SET_GLOBALLY,
    },
}
