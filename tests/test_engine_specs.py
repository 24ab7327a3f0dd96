"""Engines declare what they take (engines.EngineSpec): options are checked against the
spec, with the same one-line errors, and a new engine is one spec registered — proven
here with a toy engine registered from this test."""

from __future__ import annotations

import threading

import pytest

import corework as cw
from corework import engines
from corework.engines import ChunkWork, Engine, EngineEvents, EngineOptions, EngineSpec
from corework.engines.runner import run_chunk


class InlineEngine(Engine):
    """A toy engine: each chunk runs on a thread of its own as it is sent."""

    made_with: EngineOptions | None = None

    def __init__(self, options: EngineOptions) -> None:
        super().__init__(options.workers, options.setup)
        InlineEngine.made_with = options

    def start(self, events: EngineEvents) -> None:
        self._events = events
        for slot in range(self.workers):
            events.worker_ready(slot)

    def send(self, slot: int, work: ChunkWork) -> None:
        def run() -> None:
            self._events.chunk_done(slot, run_chunk(work.id, work.fn.fn, work.kind,
                                                    work.items))
        threading.Thread(target=run, daemon=True).start()

    def kill(self, slot: int) -> None:
        pass

    def restart(self, slot: int) -> None:
        self._events.worker_ready(slot)

    def stop(self, wait: bool, now: bool = False, *, gently: bool = False) -> None:
        pass


@pytest.fixture
def inline_engine():
    engines.register(EngineSpec("inline", InlineEngine, frozenset({"start_method"})))
    yield "inline"
    del engines._SPECS["inline"]


def test_an_engine_registered_from_outside_runs_the_whole_api(inline_engine):
    with cw.Pool(2, engine=inline_engine) as pool:
        assert list(pool.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        assert pool.submit(pow, 2, 5).result() == 32
    assert cw.map(abs, [-1, -2], engine=inline_engine) == [1, 2]
    with cw.Pool(1, engine=inline_engine, start_method="spawn") as pool:
        assert InlineEngine.made_with is not None
        assert InlineEngine.made_with.start_method == "spawn"
    with pytest.raises(ValueError, match=r"address applies to engine='dask', not 'inline'"):
        cw.Pool(1, engine=inline_engine, address="tcp://127.0.0.1:1")
    assert inline_engine in engines.engine_names()


@pytest.mark.parametrize(("engine", "options", "message"), [
    ("thread", {"start_method": "fork"},
     "start_method applies to engine='process', not 'thread'"),
    ("process", {"address": "tcp://x:1"}, "address applies to engine='dask', not 'process'"),
    ("thread", {"threads": 2}, "threads applies to engine='process' (task threads in each "
                               "worker process), not 'thread'"),
    ("thread", {"memory_limit": "1GiB"},
     "memory_limit needs engine='process': threads share one process"),
])
def test_options_an_engine_does_not_take_are_one_clear_error(engine, options, message):
    with pytest.raises(ValueError) as info:
        cw.Pool(1, engine=engine, **options)
    assert str(info.value) == message


def test_an_unknown_engine_names_every_known_one():
    with pytest.raises(ValueError, match=r"engine must be one of 'auto', 'process', 'thread', "
                                         r"'interpreter', 'dask', not 'nope'"):
        cw.Pool(1, engine="nope")
