"""What ``corework demo`` measures, as plain records: its settings, and each timing,
start-up and race it found (``experiments`` fills them in; ``table``, ``chart`` and
``verdicts`` read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Race", "Results", "Settings", "Startup", "Timing"]

IO_TASKS_PER_WORKER = 4  # waiting does not need a core: more io tasks than cores
IO_REPEATS = 2  # at most: sleeps are barely disturbed by load, and serial io is slow


@dataclass(frozen=True)
class Settings:
    workers: int
    cores: int
    scale: float = 1.0
    repeats: int = 3
    startups: int = 5  # pools started per engine for the start-up time

    @property
    def parallel(self) -> int:
        """How many tasks can really run at once here."""
        return min(self.workers, self.cores)

    @property
    def io_tasks(self) -> int:
        return self.workers * IO_TASKS_PER_WORKER

    @property
    def io_repeats(self) -> int:
        return min(self.repeats, IO_REPEATS)


@dataclass(frozen=True)
class Timing:
    """One workload run one way: ``runner`` is "serial" or an engine name."""

    workload: str
    runner: str
    seconds: float | None  # None: it could not run, and ``error`` says why
    serial: float
    error: str = ""

    @property
    def speedup(self) -> float | None:
        return None if self.seconds is None else self.serial / self.seconds


@dataclass(frozen=True)
class Startup:
    """Pool creation to first result, and the memory each worker costs."""

    engine: str
    first_pool: float | None  # the first pool of this engine in this process
    warm: float | None  # the best of the pools after it
    memory: float | None  # bytes per worker
    memory_how: str = ""
    error: str = ""


@dataclass(frozen=True)
class Race:
    expected: int
    unlocked: int
    locked: int

    @property
    def lost(self) -> int:
        return self.expected - self.unlocked


@dataclass
class Results:
    settings: Settings
    python: str
    gil: bool
    timings: list[Timing] = field(default_factory=list)
    startups: list[Startup] = field(default_factory=list)
    race: Race | None = None
    free_threaded: str = ""  # the free-threaded Python behind the "cpu-ft" rows
    notes: dict[str, str] = field(default_factory=dict)  # why a part was not measured

    def timing(self, workload: str, runner: str) -> Timing | None:
        found = [t for t in self.timings if t.workload == workload and t.runner == runner]
        return found[0] if found else None

    def startup(self, engine: str) -> Startup | None:
        found = [s for s in self.startups if s.engine == engine]
        return found[0] if found else None
