"""The README's Python examples run as written, as one script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python examples"
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1024" in done.stdout and "[32, 9]" in done.stdout


def test_cli_usage_errors_exit_with_2():
    done = subprocess.run([sys.executable, "-m", "corework", "demo", "--workers", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "positive" in done.stderr
