"""Tasks that report what a worker sees of its caller, and start programs of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time

STATE = "as imported"


def module_state(_: object = None) -> tuple[bool, str]:
    """Whether a test's fake module is in sys.modules here, and this module's STATE."""
    return "corework_test_fake_module" in sys.modules, STATE


def present(name: str) -> tuple[str | None, str, list[str], int | None]:
    """(the variable ``name``, the working directory, sys.path, the umask) here."""
    return os.environ.get(name), os.getcwd(), list(sys.path), umask()


def present_after(name: str, fifo: str) -> tuple[str | None, str, list[str], int | None]:
    """:func:`present`, once the caller opened ``fifo`` for writing and closed it."""
    seen = present(name)
    with open(fifo) as go:
        go.read()
    return seen


def umask() -> int | None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return None


def read_relative(path: str) -> str:
    with open(path) as file:
        return file.read()


def start_program(seconds: float) -> tuple[int, list[int]]:
    """Start a program that outlives this task; its pid and the descriptors it holds once
    it runs (while the dynamic loader starts it, it has a library open as descriptor 3
    for a moment: looked at again until only inherited ones are left, 5 s at most)."""
    child = subprocess.Popen(["sleep", str(seconds)], close_fds=False,
                             stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 5.0
    while True:
        fds = sorted(map(int, os.listdir(f"/proc/{child.pid}/fd")))
        if fds == [0, 1, 2] or time.monotonic() > deadline:
            return child.pid, fds
        time.sleep(0.01)


def start_program_and_exit(seconds: float) -> None:
    """``os.system("sleep N &")`` (the shell passes on every inheritable descriptor),
    then end the worker."""
    os.system(f"sleep {seconds} &")
    os._exit(3)


def modules(names: list[str]) -> list[bool]:
    """Which of ``names`` this worker had imported before the task ran."""
    return [name in sys.modules for name in names]
