"""Keeping the ledger bounded: unlabelled predictions past retention, or beyond a row cap, are deleted
(labelled ones are kept: they are what live evaluation reads)."""

from __future__ import annotations

import sqlite3
import time

from service.ledger.schema import transaction

UNLABELLED = (
    "NOT EXISTS (SELECT 1 FROM labels l WHERE l.request_id = predictions.request_id "
    "AND l.row_index = predictions.row_index)"
)


def cleanup(
    conn: sqlite3.Connection, retention_s: float, max_unlabelled_rows: int, now: float | None = None
) -> int:
    """Delete unlabelled predictions past retention or beyond the row cap; returns rows deleted.

    The age rule uses the created_at index; the cap is checked against a plain row count first,
    outside any write lock, so the usual case costs one index scan and holds no lock."""
    cutoff = (now or time.time()) - retention_s
    with transaction(conn) as c:
        deleted = c.execute(
            f"DELETE FROM predictions WHERE created_at < ? AND {UNLABELLED}", (cutoff,)
        ).rowcount
    (total,) = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
    if total <= max_unlabelled_rows:
        return int(deleted)
    with transaction(conn) as c:
        (count,) = c.execute(f"SELECT COUNT(*) FROM predictions WHERE {UNLABELLED}").fetchone()
        excess = count - max_unlabelled_rows
        if excess > 0:
            deleted += c.execute(
                f"DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions WHERE {UNLABELLED} "
                "ORDER BY created_at LIMIT ?)",
                (excess,),
            ).rowcount
    return int(deleted)
