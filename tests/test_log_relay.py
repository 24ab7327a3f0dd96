"""Records logged in workers (processes, sub-interpreters) reach the caller's real
handlers, naming their task (engines/_log_relay)."""

from __future__ import annotations

import logging
import os
import sys

import pytest

import corework as cw


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collect():
    handler = Collect()
    logger = logging.getLogger("relaytest")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def log_some(x):
    logging.getLogger("relaytest.work").info("item %s", x)
    logging.getLogger("relaytest.work").debug("below the caller's level %s", x)
    if x == 3:
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("relaytest").exception("failed on %s", x)
    return x


def log_then_crash(x):
    logging.getLogger("relaytest").warning("last words %s", x)
    os._exit(1)


#: The engines whose workers relay (threads log in this process: nothing to relay).
RELAYING = ["process", "auto"] + (["interpreter"] if sys.version_info >= (3, 12) else [])


@pytest.mark.parametrize("engine", RELAYING)
def test_records_reach_the_callers_handlers_with_levels_names_and_task(collect, engine):
    with cw.Pool(2, engine=engine) as pool:
        assert list(pool.map(log_some, range(6))) == list(range(6))
    infos = sorted((r for r in collect.records if r.levelno == logging.INFO),
                   key=lambda r: r.corework_task)
    assert [r.getMessage() for r in infos] == [f"item {i}" for i in range(6)]
    assert [r.corework_task for r in infos] == list(range(6))
    assert {r.name for r in infos} == {"relaytest.work"}
    assert all(r.process != os.getpid() for r in infos) or engine == "interpreter"
    assert all(r.corework_worker in (0, 1) for r in infos)
    assert not any(r.levelno == logging.DEBUG for r in collect.records)
    [error] = [r for r in collect.records if r.levelno == logging.ERROR]
    assert error.name == "relaytest" and error.corework_task == 3
    text = logging.Formatter().format(error)
    assert "ZeroDivisionError: division by zero" in text and "Traceback" in text


def test_a_record_logged_just_before_a_crash_arrives(collect):
    with cw.Pool(1, engine="process") as pool:
        with pytest.raises(cw.WorkerCrashed):
            pool.submit(log_then_crash, 7).result()
    assert [r.getMessage() for r in collect.records] == ["last words 7"]
    assert collect.records[0].levelname == "WARNING"


def test_the_task_index_counts_in_its_map_with_threads_per_worker(collect):
    with cw.Pool(2, engine="process", threads=2) as pool:
        assert pool.starmap(log_some, [(i,) for i in range(8)], chunksize=2) == list(range(8))
    tasks = sorted(r.corework_task for r in collect.records if r.levelno == logging.INFO)
    assert tasks == list(range(8))


@pytest.mark.parametrize("engine", RELAYING)
def test_a_formatter_shows_the_task_only_when_asked(collect, engine):
    with cw.Pool(1, engine=engine) as pool:
        pool.submit(log_some, 1).result()
    [record] = collect.records
    assert logging.Formatter("%(message)s").format(record) == "item 1"
    assert logging.Formatter("[task %(corework_task)s] %(message)s").format(record) == (
        "[task 0] item 1")


@pytest.mark.parametrize("engine", RELAYING)
def test_relay_logs_false_keeps_records_in_the_worker(collect, engine):
    with cw.Pool(1, engine=engine, relay_logs=False) as pool:
        assert list(pool.map(log_some, range(3))) == [0, 1, 2]
    assert collect.records == []


def say_hello():
    logging.getLogger("relaytest.init").warning("worker ready")


@pytest.mark.parametrize("engine", RELAYING)
def test_what_an_initializer_logs_arrives_outside_any_task(collect, engine):
    with cw.Pool(1, engine=engine, initializer=say_hello) as pool:
        assert pool.submit(abs, -1).result() == 1
    [record] = collect.records
    assert record.getMessage() == "worker ready" and record.corework_task is None


def test_relay_logs_must_be_a_bool():
    with pytest.raises(TypeError, match="relay_logs"):
        cw.Pool(1, engine="process", relay_logs="yes")  # type: ignore[arg-type]


def test_records_logged_on_dask_workers_reach_the_callers_handlers(collect, dask_address):
    """Separately started ``dask worker`` processes, a cluster others may share: a
    chunk's records come back with its result, each naming its task; the workers' own
    levels and handlers are left alone (their root's WARNING drops the INFO records)."""
    with cw.Pool(2, engine="dask", address=dask_address, initializer=say_hello) as pool:
        assert list(pool.map(log_some, range(6), chunksize=2)) == list(range(6))
    [error] = [r for r in collect.records if r.levelno == logging.ERROR]
    assert error.corework_task == 3 and "ZeroDivisionError" in logging.Formatter().format(error)
    assert error.process != os.getpid()
    hellos = [r for r in collect.records if r.getMessage() == "worker ready"]
    assert hellos and all(r.corework_task is None for r in hellos)
    assert not [r for r in collect.records if r.levelno == logging.INFO]


def test_the_pools_own_dask_cluster_takes_the_callers_levels(collect):
    pytest.importorskip("distributed")
    with cw.Pool(1, engine="dask") as pool:  # a LocalCluster of its own
        assert pool.submit(log_some, 1).result() == 1
    [info] = [r for r in collect.records if r.levelno == logging.INFO]
    assert (info.getMessage(), info.corework_task) == ("item 1", 0)
