"""Peak memory of a process tree (this process and all its descendants), sampled in a thread.

One measure for every library, counting shared memory once and wherever it lives:

    tree memory = sum over the processes of USS (private pages: psutil's
                  ``memory_full_info().uss``, Private_Clean + Private_Dirty in smaps),
                  less the shared-memory file pages that USS counts as private because
                  only one process has them mapped (they are counted below instead)
                + the memory held by every shared-memory file the tree has mapped or open,
                  once per file (device and inode), however many processes map it:
                  memfd segments (``/memfd:...``), files on a tmpfs (``/dev/shm``, where
                  joblib puts its memmaps when it fits), SysV segments, and joblib's
                  memmap folder wherever it is; found in ``/proc/PID/maps`` and
                  ``/proc/PID/fd``, and sized by the blocks they hold (``st_blocks``), so
                  a file that was made big but not yet filled counts only what it holds.

Copy-on-write copies of a shared file's pages (a write into a private mapping) are
anonymous memory and stay in USS. What the measure misses is anonymous memory that
processes share after a fork (mpire's shared objects, the interpreter itself): such pages
are in nobody's USS until one side writes them. That does not change a difference taken
across the timed region unless a fork happens inside it; the PSS sum, reported beside it,
shows the other view: each mapped page split between the processes that map it, but a
file held only by a descriptor (a segment written but not mapped) not at all. Its peaks
overshoot while processes map a file: they are read one after another, so a worker read
before a second one maps a segment counts all of it, and the second counts half again
(the memfd pages' PSS summed over the tree was seen to exceed the memfd's own pages by
50-86 MB for a 200 MB segment, which no consistent snapshot can show).

Reading ``/proc/PID/smaps`` walks the process's page tables (2-4 ms per sample for a
process with 400 MB resident), and the sampler sleeps ``interval`` between samples: on two
cores that slows a short map by 30-50%, so the case times another run without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass, field

import psutil

MB = 1_000_000

_HEADER = re.compile(rb"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ ([0-9a-f]+):([0-9a-f]+) (\d+) +(/[^\n]*)$",
                     re.M)
_TOTALS = re.compile(rb"^(Pss|Private_Clean|Private_Dirty):\s+(\d+) kB", re.M)
_FIELD = re.compile(rb"^(Private_Clean|Private_Dirty|Anonymous):\s+(\d+) kB", re.M)
_DELETED = " (deleted)"
#: Where joblib puts the arrays it memory-maps for its workers (in /dev/shm, or a temp folder).
_JOBLIB_FOLDER = "joblib_memmapping_folder"


def _tmpfs_mounts() -> tuple[str, ...]:
    with open("/proc/mounts", encoding="utf-8") as mounts:
        points = {line.split()[1] for line in mounts if line.split()[2:3] == ["tmpfs"]}
    return tuple(p.rstrip("/") + "/" for p in sorted(points))


@dataclass
class _Sample:
    """One look at the tree, in bytes."""

    private: int = 0  # USS less the shared files' pages
    pss: int = 0
    files: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (major, minor, ino)

    @property
    def total(self) -> int:
        return self.private + sum(self.files.values())


class TreeMemory:
    """Samples the memory of this process's tree until stopped; keeps the peaks.

    ``with TreeMemory() as memory: ...`` takes the baseline on entry, samples every
    ``interval`` seconds in a thread, and once more on exit; then :meth:`extra` says the
    peaks over the baseline.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._prefixes = ("/memfd:", "/SYSV", *_tmpfs_mounts())
        self._root = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)
        self.baseline = _Sample()
        self.peak_total = self.peak_pss = 0
        self.samples = 0

    def __enter__(self) -> TreeMemory:
        self.baseline = self.sample()
        self._keep(self.baseline)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._keep(self.sample())

    def extra(self) -> dict[str, float]:
        """Peak tree memory and peak PSS sum over the baseline, in MB, and the sample count."""
        return {"extra_mb": (self.peak_total - self.baseline.total) / MB,
                "pss_mb": (self.peak_pss - self.baseline.pss) / MB,
                "baseline_mb": self.baseline.total / MB, "samples": self.samples}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._keep(self.sample())

    def _keep(self, sample: _Sample) -> None:
        self.samples += 1
        self.peak_total = max(self.peak_total, sample.total)
        self.peak_pss = max(self.peak_pss, sample.pss)

    def sample(self) -> _Sample:
        """The tree's memory now (processes that end while being read are skipped)."""
        sample = _Sample()
        for process in [self._root, *self._root.children(recursive=True)]:
            with contextlib.suppress(OSError):  # gone meanwhile
                self._add_process(process.pid, sample)
        return sample

    def _add_process(self, pid: int, sample: _Sample) -> None:
        with open(f"/proc/{pid}/smaps", "rb") as smaps:
            data = smaps.read()
        for name, kb in _TOTALS.findall(data):
            if name == b"Pss":
                sample.pss += int(kb) * 1024
            else:
                sample.private += int(kb) * 1024
        for match in _HEADER.finditer(data):
            path = match[4].decode(errors="replace").removesuffix(_DELETED)
            if not self._is_shared_file(path):
                continue
            end = data.find(b"\nVmFlags", match.end())
            fields = dict(_FIELD.findall(data, match.end(), end if end >= 0 else len(data)))
            file_pages = (int(fields.get(b"Private_Clean", 0)) + int(fields.get(b"Private_Dirty", 0))
                          - int(fields.get(b"Anonymous", 0)))
            sample.private -= file_pages * 1024
            key = (int(match[1], 16), int(match[2], 16), int(match[3]))
            if key not in sample.files:
                start_end = match[0].split(b" ", 1)[0].decode()
                sample.files[key] = _held(f"/proc/{pid}/map_files/{start_end}", path)
        self._add_descriptors(pid, sample)

    def _add_descriptors(self, pid: int, sample: _Sample) -> None:
        """Shared-memory files the process holds open without (or before) mapping them."""
        folder = f"/proc/{pid}/fd"
        for fd in os.listdir(folder):
            link = f"{folder}/{fd}"
            with contextlib.suppress(OSError):
                if self._is_shared_file(os.readlink(link).removesuffix(_DELETED)):
                    st = os.stat(link)
                    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
                    sample.files.setdefault(key, st.st_blocks * 512)

    def _is_shared_file(self, path: str) -> bool:
        return path.startswith(self._prefixes) or _JOBLIB_FOLDER in path


def _held(map_file: str, path: str) -> int:
    """The memory a mapped shared file holds: through /proc/PID/map_files, else its path."""
    for candidate in (map_file, path):
        with contextlib.suppress(OSError):
            return os.stat(candidate).st_blocks * 512
    return 0
