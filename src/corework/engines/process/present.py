"""The caller's present: what a worker must see of its caller as it is *now*.

The launcher is born once, but a worker must start from the caller's environment, working
directory, ``sys.path`` and umask at the moment it is started (as a child that
``multiprocessing`` forks or spawns does). The caller sends what changed since the last
start (:func:`changes`) and the launcher applies it to itself (:func:`apply`), so every
worker it forks, or executes afresh, inherits it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

#: A change set: ``{"env": {name: value or None (unset)}, "cwd": ..., "path": [...],
#: "umask": ...}``, each key only when it changed.
Changes = dict[str, Any]
#: Bytes of environment per change set: each must fit one launcher message. (No entry is
#: longer than 128 KiB: the kernel would refuse to execute a program with it.)
_BYTES_PER_MESSAGE = 32 * 1024
_LONGEST_ENTRY = 128 * 1024


def capture() -> Changes:
    """The caller's present, whole."""
    return {"env": _environment(), "cwd": _cwd(), "path": list(sys.path), "umask": _umask()}


def changes(before: Changes, now: Changes) -> Iterator[Changes]:
    """What changed from ``before`` to ``now``, as change sets small enough to send."""
    env: dict[str, str | None] = {
        name: value for name, value in now["env"].items()
        if before["env"].get(name) != value and _size(name, value) < _LONGEST_ENTRY}
    env.update((name, None) for name in before["env"] if name not in now["env"])
    rest = {key: now[key] for key in ("cwd", "path", "umask") if now[key] != before[key]}
    batch: dict[str, str | None] = {}
    size = 0
    for name, value in env.items():
        if batch and size + _size(name, value) > _BYTES_PER_MESSAGE:
            yield {"env": batch}
            batch, size = {}, 0
        batch[name] = value
        size += _size(name, value)
    if batch:
        yield {"env": batch}
    if rest:
        yield rest


def _size(name: str, value: str | None) -> int:
    """Bytes of an environment entry as sent (UTF-8, undecodable bytes kept)."""
    return len(f"{name}={value or ''}".encode("utf-8", "surrogateescape"))


def apply(change: Changes, caller: int) -> None:
    """Make this process (the launcher) see the caller as ``change`` says."""
    for name, value in change.get("env", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "path" in change:
        sys.path[:] = change["path"]
    if "umask" in change and change["umask"] is not None:
        os.umask(change["umask"])
    if "cwd" in change:
        _chdir(change["cwd"], caller)


def _environment() -> dict[str, str]:
    while True:  # another thread may change it while it is copied
        with contextlib.suppress(RuntimeError):
            return dict(os.environ)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed: the launcher follows the caller's own (see _chdir)
        return None


def _chdir(path: str | None, caller: int) -> None:
    try:
        os.chdir(path if path is not None else f"/proc/{caller}/cwd")
    except OSError:
        try:  # removed or renamed meanwhile: the directory the caller is in, still
            os.chdir(f"/proc/{caller}/cwd")
        except OSError as exc:
            import logging

            logging.getLogger("corework").debug(
                "workers cannot enter the caller's directory %s: %s", path, exc)


def _umask() -> int | None:
    """The umask, read without changing it (another thread may be creating a file)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None  # no procfs: workers keep the umask the launcher was born with
