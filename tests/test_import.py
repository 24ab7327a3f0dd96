"""What ``import corework`` (and ``corework --help``, and a first map) loads: nothing heavy
before it is used. Each check runs in a fresh interpreter and reads ``sys.modules``; how
long the import takes is for the benchmarks, never for a test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import corework as cw

# Modules that `import corework` must leave out: optional or heavy dependencies, and the
# standard library's costlier modules, which only the code that uses them imports.
NOT_ON_IMPORT = (
    "numpy", "dask", "distributed", "psutil", "tqdm", "rich", "cloudpickle",
    "threadpoolctl", "matplotlib", "concurrent.futures", "multiprocessing", "logging",
    "json", "socket", "ctypes", "tempfile", "statistics", "subprocess", "dataclasses",
    "inspect", "typing", "argparse",
)

# Never needed by a first map in the caller (they are for the CLI, the advisor, Dask, a
# memory limit, spawned interpreters or other engines).
NOT_FOR_A_MAP = (
    "numpy", "dask", "distributed", "psutil", "tqdm", "rich", "threadpoolctl",
    "statistics", "json", "subprocess", "tempfile", "argparse", "multiprocessing.connection",
    "corework.cli", "corework.api.advise", "corework.engines.dask",
    "corework.engines.local.interpreter",
)


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has after running ``code``."""
    script = code + "\nimport sys as _s\nprint(' '.join(sorted(_s.modules)))"  # no json here
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())


def test_import_loads_no_dependency_nor_heavy_module():
    modules = loaded_after("import corework")
    assert sorted(modules & set(NOT_ON_IMPORT)) == []
    assert sorted(name for name in modules if name.startswith("corework.")) == []


def test_every_public_name_is_reached_lazily():
    code = textwrap.dedent("""
        import concurrent.futures
        import corework as cw
        from corework import WorkerCrashed, map
        assert map is cw.map and WorkerCrashed is cw.WorkerCrashed
        assert set(cw.__all__) <= set(dir(cw))
        names = {name: getattr(cw, name) for name in cw.__all__}
        assert all(getattr(obj, "__module__", "corework") == "corework"
                   for obj in names.values() if callable(obj)), names
        assert issubclass(cw.WorkerCrashed, concurrent.futures.BrokenExecutor)
        assert issubclass(cw.Cancelled, concurrent.futures.CancelledError)
        try:
            cw.no_such_name
        except AttributeError:
            pass
        else:
            raise AssertionError("cw.no_such_name")
    """)
    loaded_after(code)


def test_errors_raised_inside_are_named_as_users_reach_them():
    from corework import _errors

    assert _errors.RemoteTraceback.__module__ == "corework"
    assert _errors.TaskTimeout is cw.TaskTimeout
    assert isinstance(_errors.MemoryLimitExceeded("x"), cw.WorkerCrashed)


def test_help_imports_no_engine():
    modules = loaded_after(textwrap.dedent("""
        import contextlib, io, sys
        from corework.cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--help"])
    """))
    heavy = [name for name in modules
             if name.startswith(("corework.engines", "corework.scheduling", "corework.api",
                                 "corework.transport"))
             or name in ("cloudpickle", "psutil", "numpy", "dask", "threadpoolctl")]
    assert heavy == []


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_a_first_map_loads_only_its_engine(engine):
    modules = loaded_after(textwrap.dedent(f"""
        import corework as cw
        assert cw.map(abs, range(-5, 5), engine={engine!r}) == [abs(i) for i in range(-5, 5)]
    """))
    other = {"process": "corework.engines.local.thread",
             "thread": "corework.engines.process.engine"}
    unwanted = {*NOT_FOR_A_MAP, other[engine]}
    assert sorted(modules & unwanted) == []
    if engine == "thread":
        assert sorted(modules & {"corework.engines.process.launcher", "socket", "cloudpickle",
                                 "corework.transport.picklers"}) == []
    else:  # an importable function over plain data: the standard pickle sends it
        assert "cloudpickle" not in modules


def test_cloudpickle_comes_in_for_what_only_it_can_send():
    modules = loaded_after(textwrap.dedent("""
        import corework as cw
        assert cw.map(lambda x: -x, [1, 2], engine="process") == [-1, -2]
    """))
    assert "cloudpickle" in modules
