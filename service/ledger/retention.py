"""Keeping the ledger bounded: unlabelled predictions past retention, or beyond a row cap, are deleted
(labelled ones are kept: they are what live evaluation reads).

Deletes go in batches of BATCH_ROWS, each its own short transaction, so writers are never held up for
long. On a PostgreSQL ledger shared by replicas only one replica runs retention at a time (a
transaction-level advisory lock, tried, never waited for): the others skip that round, so rows are
not counted as deleted twice and two replicas never contend for the same rows.
"""

from __future__ import annotations

import time

from service.ledger.database import Database

BATCH_ROWS = 10_000
RETENTION_LOCK = 7_316_002
UNLABELLED = (
    "NOT EXISTS (SELECT 1 FROM labels l WHERE l.request_id = predictions.request_id "
    "AND l.row_index = predictions.row_index)"
)


def _row_key(db: Database) -> str:
    return "rowid" if db.kind == "sqlite" else "ctid"


def _delete_batch(db: Database, where: str, params: tuple[object, ...], limit: int) -> int | None:
    """Delete up to ``limit`` oldest rows matching ``where`` in one transaction; None when another
    replica holds retention."""
    key = _row_key(db)
    with db.transaction():
        if (
            db.kind != "sqlite"
            and not db.execute("SELECT pg_try_advisory_xact_lock(?)", (RETENTION_LOCK,)).fetchone()[0]
        ):
            return None
        return int(
            db.execute(
                f"DELETE FROM predictions WHERE {key} IN (SELECT {key} FROM predictions WHERE {where} "
                "ORDER BY created_at LIMIT ?)",
                (*params, limit),
            ).rowcount
        )


def cleanup(db: Database, retention_s: float, max_unlabelled_rows: int, now: float | None = None) -> int:
    """Delete unlabelled predictions past retention or beyond the row cap; returns rows deleted.

    The age rule uses the created_at index; the cap is checked against a plain row count first, so
    the usual case costs one index scan and a count."""
    cutoff = (now or time.time()) - retention_s
    db.execute("DELETE FROM input_bins WHERE bucket < ?", (int(cutoff),))  # live input counts (drift)
    deleted = 0
    while True:
        n = _delete_batch(db, f"created_at < ? AND {UNLABELLED}", (cutoff,), BATCH_ROWS)
        if n is None:
            return deleted
        deleted += n
        if n < BATCH_ROWS:
            break
    (total,) = db.execute("SELECT COUNT(*) FROM predictions").fetchone()
    if total <= max_unlabelled_rows:
        return deleted
    (count,) = db.execute(f"SELECT COUNT(*) FROM predictions WHERE {UNLABELLED}").fetchone()
    excess = int(count) - max_unlabelled_rows
    while excess > 0:
        n = _delete_batch(db, UNLABELLED, (), min(excess, BATCH_ROWS))
        if not n:
            break
        deleted += n
        excess -= n
    return deleted
