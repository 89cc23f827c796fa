"""The ledger's SQL: one table of predictions (a row per request row, every variant's output in one
document) and one of labels. Plain SQL, no SQLite-only types, so a shared database can take its place.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    served TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    outputs TEXT NOT NULL,
    PRIMARY KEY (request_id, row_index)
);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_at);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    label_index INTEGER,
    value DOUBLE PRECISION,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (request_id, row_index)
);
"""
ROLE_CODES = {"served": "s", "shadow": "h", "member": "m"}
ROLES_BY_CODE = {v: k for k, v in ROLE_CODES.items()}


def connect(path: Path, max_bytes: int | None = None) -> sqlite3.Connection:
    """A connection with WAL, a busy timeout and the schema in place; ``max_bytes`` caps the file
    (SQLite's max_page_count: a write beyond it fails with "database or disk is full", as on a full
    disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    if max_bytes is not None:
        (page,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute(f"PRAGMA max_page_count={max(1, int(max_bytes) // int(page))}")
    return conn


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class WatchedConnection:
    """A ledger connection that notices when the file at its path is no longer the one it holds
    (deleted, or replaced by a restore): :meth:`check` reopens it there (a new file gets the schema)
    instead of writing on into an unlinked inode. The writer and the label store both use it."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self.reopened = 0
        self.conn = connect(path, max_bytes)
        self._identity = file_identity(path)

    def check(self) -> None:
        now = file_identity(self.path)
        if now is not None and now == self._identity:
            return
        what = "deleted" if now is None else "replaced"
        log.warning(
            "ledger %s was %s while open: reopening it (new rows go to the file now there)", self.path, what
        )
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self.conn = connect(self.path, self._max_bytes)
        self._identity = file_identity(self.path)
        self.reopened += 1

    def close(self) -> None:
        self.conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (nothing half-written)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, I/O errors): a second ROLLBACK would
        # fail and hide the error that matters.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def decode_outputs(text: str) -> dict[str, tuple[int | None, float, str]]:
    """variant -> (class index, score, role) from a stored outputs document."""
    return {v: (o[0], o[1], ROLES_BY_CODE[o[2]]) for v, o in orjson.loads(text).items()}
