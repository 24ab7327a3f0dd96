"""Where ``__main__`` functions land in a worker: one namespace for all of them, as one
module, so a global an initializer sets is seen by the tasks (as under multiprocessing).

Standard library only, and no ``typing`` at run time: sub-interpreters load this file by
path (see ``engines.local.in_interpreter``), where each import costs their start-up."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MainGlobals", "MainNamespace", "main_namespace", "run_initializer"]


class MainGlobals:
    """Pickled in place of a ``__main__`` function's globals: loaded, it is the loading
    process's one :class:`MainNamespace`."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (main_namespace, ())


class MainNamespace(dict):  # type: ignore[type-arg]
    """The globals of every ``__main__`` function loaded in a worker: a script's (or a
    notebook's) functions see one another's globals there, as in one module — so a
    global an initializer sets is seen by the tasks, as under ``multiprocessing``.

    Functions sent later bring the caller's current values of the globals they use (a
    helper redefined in a notebook cell replaces the old one), except for the names the
    worker itself has set (:meth:`keep`), which they never overwrite."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: set[str] = set()

    def keep(self, names: set[str]) -> None:
        """These names belong to the worker now (an initializer set them)."""
        self._kept |= names

    def update(self, *args: Any, **kwargs: Any) -> None:
        incoming = dict(*args, **kwargs)
        super().update({k: v for k, v in incoming.items() if k not in self._kept})


_main_namespace: MainNamespace | None = None


def main_namespace() -> MainNamespace:
    """This process's namespace for loaded ``__main__`` functions."""
    global _main_namespace
    if _main_namespace is None:
        _main_namespace = MainNamespace()
    return _main_namespace


def run_initializer(initializer: Any, initargs: tuple[Any, ...]) -> None:
    """Call a worker's initializer; the ``__main__`` globals it sets are the worker's."""
    namespace = main_namespace()
    before = dict(namespace)
    initializer(*initargs)
    namespace.keep({name for name, value in namespace.items()
                    if name not in before or before[name] is not value})
