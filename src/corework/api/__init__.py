"""The public API's layer: ``map``/``imap``, ``Pool``, ``Process``/``Thread``, ``share``,
``advise``, the ``auto`` engine's choice and progress bars. It turns a user's call into
options and map jobs for :mod:`corework.scheduling`; ``corework/__init__`` re-exports it."""
