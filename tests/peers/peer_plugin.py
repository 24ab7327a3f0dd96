"""The pytest plugin of a peer's run (``-p peer_plugin``, this folder on the path, not
the repository: tqdm's tests are a package named ``tests`` too): it puts corework where
the peer's tests expect their stock parallel machinery (which swap: the ``SWAP``
environment variable), and deselects the tests ``peer_skips`` lists for the suite
(``SUITE``), each with its reason."""

from __future__ import annotations

import os
from typing import Any

#: Which swap the run asks for, and which suite it is (set by the runner).
SWAP = "COREWORK_PEER_SWAP"
SUITE = "COREWORK_PEER_SUITE"


def pytest_configure(config: Any) -> None:
    swap = os.environ.get(SWAP, "")
    if swap.startswith("joblib"):  # "joblib-default", "joblib-beside-loky"
        import joblib.parallel

        import corework.joblib  # registers "corework" before the tests are collected

        if swap == "joblib-default":  # what joblib's conftest does for its own variable
            joblib.parallel.DEFAULT_BACKEND = corework.joblib.NAME
    elif swap == "executors":  # tqdm's maps import them from concurrent.futures each call
        import concurrent.futures

        import corework.futures

        for name in corework.futures.__all__:
            if name.endswith("PoolExecutor") and hasattr(concurrent.futures, name):
                setattr(concurrent.futures, name, getattr(corework.futures, name))
    elif swap == "dask-executor":  # dask.multiprocessing makes its pools with this name
        import dask.multiprocessing

        import corework.futures

        dask.multiprocessing.ProcessPoolExecutor = corework.futures.ProcessPoolExecutor
    elif swap == "dask-pool":
        import dask

        import corework as cw

        pool = cw.Pool(2, engine="process")
        dask.config.set(pool=pool)
        config.add_cleanup(pool.shutdown)
    elif swap:
        raise ValueError(f"unknown {SWAP}={swap!r}")


def pytest_generate_tests(metafunc: Any) -> None:
    """With the "joblib-beside-loky" swap: a "corework" case beside each "loky" value of a
    ``backend`` parametrisation (the lists are joblib's own, extended in place once)."""
    if os.environ.get(SWAP) != "joblib-beside-loky":
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names, values = mark.args[0], mark.args[1]
        if names != "backend" or not isinstance(values, list) or "loky" not in values:
            continue
        if "corework" not in values:
            values.append("corework")
        ids = mark.kwargs.get("ids")
        if isinstance(ids, list) and len(ids) == len(values) - 1:
            ids.append("corework")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    from peer_skips import SKIPS

    listed = SKIPS.get(os.environ.get(SUITE, ""), {})
    kept, dropped = [], []
    for item in items:
        name = item.nodeid.rsplit("::", 1)[-1]
        (dropped if name in listed or name.split("[", 1)[0] in listed else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
