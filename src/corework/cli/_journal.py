"""``corework run --journal``: an SQLite file of every finished record, to resume from.

One row per input record (its index, whether it succeeded, its output line, and which
version of the function produced it), plus the identity of the run: the target function
(its current version) and the input. A rerun with a changed function is refused, except
with ``--retry-failed``: then the failed records run again with the new version and the
succeeded ones are kept, each row still naming the version that wrote it. Journals of
schema 1 (no versions) are migrated when opened: their rows get the one function they had.

Rows are committed as their records finish: each batch of results that comes back from a
worker is one transaction, and those records finished at the same moment, so nothing
finished is ever left uncommitted waiting for other records. WAL mode with
``synchronous=NORMAL``: a killed process (SIGKILL, Ctrl-C, the OOM killer) loses no
committed record; a power loss may lose the last few commits, which a rerun simply runs
again. Either way every record ends up in the journal — and so in the output — exactly
once, because rows are keyed by index.

Test hook: with ``COREWORK_JOURNAL_TEST_KILL_AFTER=N`` in the environment, the process
SIGKILLs itself after inserting its N-th row and before committing it, to test a crash in
the middle of a commit. It is read once, when the journal is opened.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator, Sequence

__all__ = ["JOURNAL_LINE_LIMIT", "IndexSet", "Journal", "JournalError", "JournalWriteError"]

_SCHEMA_VERSION = "2"
_KILL_AFTER = "COREWORK_JOURNAL_TEST_KILL_AFTER"
_READ_BATCH = 10_000


#: The longest output line the journal keeps: SQLite's default limit on a string
#: (SQLITE_MAX_LENGTH, one billion bytes), less room for the row around it.
JOURNAL_LINE_LIMIT = 999_000_000

class JournalError(Exception):
    """The journal cannot be used for this run (the message says why, in one line)."""


class JournalWriteError(Exception):
    """A commit failed mid-run (a full disk): the journal keeps every record committed
    before it. One line, exit code 1."""


class IndexSet:
    """A set of record indices as a bitmap: ten million records take 1.25 MB, where a
    Python set of ints would take hundreds."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, index: int) -> None:
        byte, bit = divmod(index, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, index: int) -> bool:
        byte, bit = divmod(index, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


class Journal:
    """The SQLite journal at ``path`` (created if missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        for name in (path, f"{path}-wal", f"{path}-shm"):  # SQLite follows links
            if os.path.islink(name):
                raise JournalError(
                    f"cannot use {path!r} as a journal: {name!r} is a symbolic link (a "
                    "run would write into the file it points at); give a real file")
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=0.5)
            # One run at a time: the lock is taken now and held until close(), so a
            # second run on the same journal is refused instead of doing the work twice.
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN EXCLUSIVE")
            self._db.execute("COMMIT")
            self._db.executescript("""
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS records (
                    idx INTEGER PRIMARY KEY, ok INTEGER NOT NULL,
                    seq INTEGER NOT NULL, line TEXT NOT NULL, fn INTEGER);
                CREATE TABLE IF NOT EXISTS functions (
                    id INTEGER PRIMARY KEY, identity TEXT UNIQUE NOT NULL);
                CREATE INDEX IF NOT EXISTS records_by_seq ON records (seq);
            """)
            row = self._db.execute("SELECT max(seq) FROM records").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise JournalError(f"cannot use {path!r} as a journal: {exc}") from None
            raise JournalError(f"journal {path!r} is in use by another run; wait for it "
                               f"to finish, or use another --journal path") from None
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot use {path!r} as a journal: {exc}") from None
        self._seq = row[0] or 0
        self._kill_after = int(os.environ.get(_KILL_AFTER, "0"))
        self._inserted = 0
        self._function = 0  # the functions row of this run's function

    def check_identity(self, identity: dict[str, str], *, retry_failed: bool = False
                       ) -> str | None:
        """Store ``identity`` in a new journal; refuse a journal written for another one.

        Another function is accepted with ``retry_failed``: it becomes the journal's
        function, and the old one's identity is returned (None when nothing changed)."""
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if stored.get("schema") == "1":
            stored = self._migrate(stored)
        wanted = {"schema": _SCHEMA_VERSION, **identity}
        changed = None
        with self._transaction():
            if not stored:
                self._db.executemany("INSERT INTO meta VALUES (?, ?)", wanted.items())
            for key, value in wanted.items():
                if stored and stored.get(key) != value:
                    if key != "function" or not retry_failed:
                        raise JournalError(self._refusal(key, stored.get(key), value))
                    changed = stored[key]
                    self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
            self._function = self._function_id(wanted["function"])
        return changed

    def _refusal(self, key: str, stored: str | None, wanted: str) -> str:
        fix = ("rerun with --retry-failed to run its failed records with this function "
               "and keep the succeeded ones, or use another --journal path, or delete "
               "this one to start over") if key == "function" else (
               "use another --journal path, or delete this one to start over")
        return (f"journal {self.path!r} was written for another {key} "
                f"({stored!r}, not {wanted!r}); {fix}")

    def _function_id(self, identity: str) -> int:
        self._db.execute("INSERT OR IGNORE INTO functions (identity) VALUES (?)", (identity,))
        row = self._db.execute("SELECT id FROM functions WHERE identity = ?",
                               (identity,)).fetchone()
        return int(row[0])

    def _migrate(self, stored: dict[str, str]) -> dict[str, str]:
        """Schema 1 to 2: every row was written by the one function the journal had."""
        with self._transaction():
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(records)")]
            if "fn" not in columns:
                self._db.execute("ALTER TABLE records ADD COLUMN fn INTEGER")
            function = self._function_id(stored["function"])
            self._db.execute("UPDATE records SET fn = ?", (function,))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                             (_SCHEMA_VERSION,))
        return {**stored, "schema": _SCHEMA_VERSION}

    def versions(self) -> list[tuple[str, int, int]]:
        """``(function identity, succeeded, failed)`` of each version with rows."""
        rows = self._db.execute(
            "SELECT f.identity, coalesce(sum(r.ok), 0), count(*) FROM records r "
            "JOIN functions f ON f.id = r.fn GROUP BY r.fn ORDER BY r.fn").fetchall()
        return [(identity, int(ok), int(total) - int(ok)) for identity, ok, total in rows]

    def done(self, *, retry_failed: bool) -> IndexSet:
        """The records finished before (only the successful ones, with ``retry_failed``)."""
        found = IndexSet()
        query = "SELECT idx FROM records WHERE idx >= ? {} ORDER BY idx LIMIT ?".format(
            "AND ok" if retry_failed else "")
        start = 0
        while batch := self._db.execute(query, (start, _READ_BATCH)).fetchall():
            for (index,) in batch:
                found.add(index)
            start = batch[-1][0] + 1
        return found

    def record(self, rows: Sequence[tuple[int, bool, str]]) -> None:
        """Commit finished records: ``(index, succeeded, output line)`` each, as written
        by this run's function. A failed commit (a full disk) is rolled back whole."""
        try:
            with self._transaction():
                for index, ok, line in rows:
                    self._seq += 1
                    self._db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                                     (index, int(ok), self._seq, line, self._function))
                    self._inserted += 1
                    if self._inserted == self._kill_after:  # the test hook: die mid-commit
                        os.kill(os.getpid(), signal.SIGKILL)
        except (sqlite3.OperationalError, sqlite3.DataError) as exc:
            raise JournalWriteError(f"cannot write to the journal {self.path!r}: {exc}; "
                                    f"the records committed before are kept") from None

    def counts(self) -> tuple[int, int]:
        """(succeeded, failed) records in the journal."""
        ok, total = self._db.execute(
            "SELECT coalesce(sum(ok), 0), count(*) FROM records").fetchone()
        return int(ok), int(total) - int(ok)

    def lines(self, *, ordered: bool) -> Iterator[str]:
        """Every record's output line, by index or in the order they finished."""
        key = "idx" if ordered else "seq"
        query = f"SELECT {key}, line FROM records WHERE {key} >= ? ORDER BY {key} LIMIT ?"
        start = 0
        while batch := self._db.execute(query, (start, _READ_BATCH)).fetchall():
            for _, line in batch:
                yield line
            start = batch[-1][0] + 1

    def first_errors(self, limit: int) -> list[str]:
        """Output lines of the first ``limit`` failed records, by index."""
        rows = self._db.execute("SELECT line FROM records WHERE NOT ok ORDER BY idx LIMIT ?",
                                (limit,)).fetchall()
        return [line for (line,) in rows]

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` if the block raised (Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._db.execute("ROLLBACK")
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:  # a full disk at the commit: nothing of it is kept
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
