"""The installed distribution says its license and where its documentation is."""

from __future__ import annotations

from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_and_project_urls():
    meta = metadata("corework")
    assert meta["License-Expression"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL") or [])
    # pip show takes "Homepage" for its Home-page line; the README is the documentation.
    assert {"Homepage", "Documentation", "Source"} <= urls.keys()
    assert urls["Documentation"].endswith("#readme")
