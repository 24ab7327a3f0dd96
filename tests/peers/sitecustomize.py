"""Imported by every new interpreter of a peer's run (this folder is on PYTHONPATH): in a
joblib run, each one registers corework's backend, as a user's program that names
``backend="corework"`` imports ``corework.joblib`` — joblib's tests start such programs
(scripts in a fresh interpreter, loky's workers) that could not know to."""

import os

if os.environ.get("COREWORK_PEER_SWAP", "").startswith("joblib"):
    try:
        import corework.joblib  # noqa: F401
    except ImportError:  # joblib or corework missing in that interpreter: it says so later
        pass
