"""The suite's leftover check (conftest.py) blames a test only for what its own processes
left in /dev/shm, never for another program's files on a shared machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import _left_behind

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")


def test_another_programs_files_are_not_ours(tmp_path):
    """A file another program made (its pid in the name, as joblib's and loky's) and one
    with no pid at all are not this test's."""
    stranger = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    names = {f"joblib_memmapping_folder_{stranger}_abc", f"sem.loky-{stranger}-x", "psm_x"}
    assert _left_behind(names) == set()


def test_a_file_named_by_this_process_and_unmapped_is_left_behind():
    name = f"corework-test-{os.getpid()}"
    path = f"/dev/shm/{name}"
    with open(path, "w"):
        pass
    try:
        assert _left_behind({name}) == {name}
        assert _left_behind({f"joblib_memmapping_folder_{os.getpid()}_x"}) == set()  # gone
    finally:
        os.unlink(path)
