"""corework in a real Jupyter kernel: cell-defined functions on every engine, progress,
worker output, the kernel's interrupt, and the example notebook end to end.

The kernel runs this interpreter (a kernelspec written for the test, so no kernel
installed elsewhere is picked up), without ``PYTHONUNBUFFERED``, as Jupyter starts it.
COREWORK_TEST_NOTEBOOKS=0 skips these tests (CI runs them on its main interpreter only).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

if os.environ.get("COREWORK_TEST_NOTEBOOKS", "1") == "0":
    pytest.skip("COREWORK_TEST_NOTEBOOKS=0", allow_module_level=True)
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client import KernelManager  # noqa: E402 - after the skips
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "corework-test"
STARTUP = 60  # seconds: a deadlock tripwire for a kernel's start, not a timing assumption


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data folder holding one kernelspec: this very interpreter."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "corework test", "language": "python"}))
    return folder


@pytest.fixture
def kernels(jupyter_path: Path, monkeypatch: pytest.MonkeyPatch) -> KernelSpecManager:
    """Kernelspecs with ours first (nbclient finds it through JUPYTER_PATH)."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    return KernelSpecManager(kernel_dirs=[str(jupyter_path / "kernels")])


def _kernel_env() -> dict[str, str]:
    """This environment, as a notebook server would pass it: unbuffered output off, and
    not marked as inside pytest (ipykernel would then leave fd 1 and 2 alone)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONUNBUFFERED", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _execute(path: Path, cwd: Path) -> Any:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=120,
                                     startup_timeout=STARTUP,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute(env=_kernel_env())
    return notebook


def _text(cell: Any) -> str:
    """Everything a cell showed: streams, and the plain-text form of rich outputs."""
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts.append(json.dumps(output.get("data", {})))
    return "".join(parts)


def _tagged(notebook: Any, tag: str) -> Any:
    return next(c for c in notebook.cells if tag in c.metadata.get("tags", []))


def test_cell_defined_functions_progress_and_prints(kernels, tmp_path):
    notebook = _execute(ROOT / "tests" / "notebooks" / "cells.ipynb", tmp_path)
    prints = _text(_tagged(notebook, "prints"))
    for x in range(4):  # workers' lines reach the cell that ran them
        assert f"task {x} says hello" in prints
    shown = _text(_tagged(notebook, "progress"))
    # a notebook widget where ipywidgets is installed, else a text bar in the cell
    assert "application/vnd.jupyter.widget-view+json" in shown or "200/200" in shown, shown


def test_example_notebook_runs_end_to_end(kernels, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("numpy")
    started = time.monotonic()
    notebook = _execute(ROOT / "examples" / "threads_vs_processes.ipynb", tmp_path)
    assert time.monotonic() - started < 90  # the notebook's own budget is under a minute
    assert any("image/png" in output.get("data", {})
               for cell in notebook.cells for output in cell.get("outputs", [])), "no chart"


# ----------------------------------------------------------------------------- interrupt


class Kernel:
    """A kernel driven message by message, for what nbclient cannot do (interrupt)."""

    def __init__(self, kernels: KernelSpecManager, cwd: Path) -> None:
        self.km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernels)
        self.km.start_kernel(env=_kernel_env(), cwd=str(cwd))
        self.client = self.km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=STARTUP)

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def send(self, code: str) -> str:
        return str(self.client.execute(code))

    def reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.client.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if message["parent_header"].get("msg_id") == msg_id:
                return dict(message["content"])

    def run(self, code: str, timeout: float = 60) -> dict[str, Any]:
        return self.reply(self.send(code), timeout)

    def close(self) -> None:
        self.client.stop_channels()
        self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernel(kernels: KernelSpecManager, tmp_path: Path) -> Iterator[Kernel]:
    running = Kernel(kernels, tmp_path)
    try:
        yield running
    finally:
        running.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def _gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_kernel_interrupt_stops_the_map_and_the_kernel_goes_on(kernel, tmp_path):
    marker = tmp_path / "running"
    setup = kernel.run(
        "import corework as cw, time\n"
        "from pathlib import Path\n"
        f"marker = Path({str(marker)!r})\n"
        "def slow(x):\n"
        "    marker.touch()\n"
        "    time.sleep(0.5)\n"
        "    return x\n")
    assert setup["status"] == "ok", setup
    long_map = kernel.send("cw.map(slow, range(1000), engine='process', workers=2)")
    deadline = time.monotonic() + STARTUP
    while not marker.exists():  # a task has started in a worker
        assert time.monotonic() < deadline, "the map never started"
        time.sleep(0.02)
    workers = [p for p in _descendants(kernel.pid) if p.ppid() != kernel.pid]  # launcher's
    assert len(workers) == 2, workers

    interrupted = time.monotonic()
    kernel.km.interrupt_kernel()
    reply = kernel.reply(long_map, timeout=10)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert time.monotonic() - interrupted < 1.0 + 0.5  # within a second, plus the messaging
    assert not _gone(workers, timeout=5), "workers outlived the interrupted map"

    again = kernel.run("assert cw.map(lambda x: x + 1, range(10), engine='process') "
                       "== list(range(1, 11))")
    assert again["status"] == "ok", again


def test_no_process_outlives_the_kernel(kernels, tmp_path):
    running = Kernel(kernels, tmp_path)
    try:
        reply = running.run(
            "import corework as cw\n"
            "pool = cw.Pool(2, engine='process')\n"  # left running on purpose
            "assert pool.submit(abs, -1).result() == 1")
        assert reply["status"] == "ok", reply
        descendants = _descendants(running.pid)
        assert len(descendants) >= 3, descendants  # the launcher and two workers
    finally:
        running.close()
    assert not _gone(descendants, timeout=10), "processes outlived the kernel"
