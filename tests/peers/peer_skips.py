"""The peers' tests that check a private detail of loky or the standard library, per
suite, each with its reason (a test name, or a test name with its parameters)."""

from __future__ import annotations

_DASK_POOL_SET_GLOBALLY = (
    "the run sets one process pool in dask.config for every test (as a user would); "
    "this test asks dask to make its own pool (an initializer, a context) or runs the "
    "threaded scheduler, which takes that pool too: the standard library's "
    "ProcessPoolExecutor set the same way fails it as well")

_LOKY_BY_NAME = (
    "asserts that prefer='processes' gives an instance of LokyBackend itself; with "
    "corework as the default backend joblib keeps corework's (process-based) backend")
_MEMMAPPING = (
    "checks joblib's memmapping of large arrays (np.memmap in the workers, its temporary "
    "folders and their resource_tracker): corework sends arrays through its own shared "
    "memory, and no array arrives as an np.memmap")
_SCRIPT_OF_ITS_OWN = (
    "runs a script in a new interpreter with an environment of its own (PYTHONPATH "
    "replaced), so nothing there imports corework.joblib, which a user's script naming "
    "backend='corework' does (see sitecustomize.py); the script checks memmapping too")
_MULTIPROCESSING_FORKS_US = (
    "a case of joblib's own multiprocessing backend, not corework's: its pool forks this "
    "test process, where earlier tests left corework's kept worker pool and its threads, "
    "and its workers raise KeyboardInterrupt; it waited past pytest's 120 s once in five "
    "CI runs (not investigated further)")
_POOL_REMADE = (
    "asserts that joblib's pool object is a new one after a failed call (loky's is torn "
    "down and remade); corework stops the failed call's tasks, replaces the workers that "
    "ran them, and keeps its pool")

SKIPS: dict[str, dict[str, str]] = {
    "joblib-default": {
        "test_error_capture[multiprocessing]": _MULTIPROCESSING_FORKS_US,
        "test_backend_hinting_and_constraints[parallel_config]": _LOKY_BY_NAME,
        "test_backend_hinting_and_constraints[parallel_backend]": _LOKY_BY_NAME,
    },
    "joblib-beside-loky": {
        "test_error_capture[corework]": _POOL_REMADE,
        "test_auto_memmap_on_arrays_from_generator[corework]": _MEMMAPPING,
        "test_memmapping_leaks[corework]": _MEMMAPPING,
        "test_parallel_isolated_temp_folders[corework]": _MEMMAPPING,
        "test_managed_backend_reuse_temp_folder[corework]": _MEMMAPPING,
        "test_memmap_returned_as_regular_array[corework]": _MEMMAPPING,
        "test_permission_error_windows_memmap_sent_to_parent[corework]": _SCRIPT_OF_ITS_OWN,
        "test_many_parallel_calls_on_same_object[corework]": _SCRIPT_OF_ITS_OWN,
        "test_child_raises_parent_exits_cleanly[corework]": _SCRIPT_OF_ITS_OWN,
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
