"""The README's Python examples run as written, as one script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from corework.cli.demo.verdicts import CLAIMS, CONFIRMED, NOT_CONFIRMED, NOT_MEASURED

README = Path(__file__).resolve().parent.parent / "README.md"
STATUSES = (CONFIRMED, NOT_CONFIRMED, NOT_MEASURED)


@pytest.mark.once  # the same on every interpreter: CI runs it on its main one
def test_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python examples"
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1024" in done.stdout and "[32, 9]" in done.stdout


def test_readme_opens_with_the_demo_and_its_chart():
    text = README.read_text()
    demo = re.search(r"```console\n\$ corework demo.*?\n(.*?)```", text, flags=re.DOTALL)
    assert demo and text.index(demo.group(0)) < text.index("## Two commands")
    lines = demo.group(1).splitlines()
    for claim in CLAIMS.values():  # pasted from a run of the current demo, not an older one
        assert any(claim in line and line.startswith(STATUSES) for line in lines), claim
    chart = README.parent / "docs" / "demo.png"
    assert f"]({chart.relative_to(README.parent)})" in text
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert chart.stat().st_size < 100_000


def test_cli_usage_errors_exit_with_2():
    done = subprocess.run([sys.executable, "-m", "corework", "demo", "--workers", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "positive" in done.stderr
