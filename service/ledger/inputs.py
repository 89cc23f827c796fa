"""Live input bin counts in the ledger: each worker rewrites its own row per minute bucket, so a retry
after a failed write never counts twice, and every worker's and replica's rows sum to the whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from service.ledger.database import Database

BUCKET_S = 60
"""Counts are kept per minute: a /drift window is a whole number of these."""
UPSERT = (
    "INSERT INTO input_bins (model, version, bucket, worker, n_rows, counts) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (model, version, bucket, worker) DO UPDATE SET n_rows = excluded.n_rows, "
    "counts = excluded.counts"
)


def write_bins(
    db: Database,
    model: str,
    version: int,
    worker: str,
    buckets: Mapping[int, tuple[int, npt.NDArray[np.int64]]],
) -> None:
    """Write (replace) this worker's rows for the given buckets in one transaction."""
    rows = [
        (model, version, bucket, worker, n, orjson.dumps(counts, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        for bucket, (n, counts) in buckets.items()
    ]
    with db.transaction():
        db.executemany(UPSERT, rows)


@dataclass(frozen=True)
class LiveCounts:
    """Bin counts summed over every worker since a time."""

    rows: int
    counts: npt.NDArray[np.int64]
    workers: int
    first_bucket: int | None


def read_bins(db: Database, model: str, version: int, size: int, since: float) -> LiveCounts:
    """The sum of every worker's counts in buckets starting at or after ``since`` (unix seconds).
    Rows of another size (written for another reference) are skipped."""
    cur = db.execute(
        "SELECT bucket, worker, n_rows, counts FROM input_bins WHERE model = ? AND version = ? AND bucket >= ?",
        (model, version, int(since)),
    )
    total = np.zeros(size, dtype=np.int64)
    rows, workers, first = 0, set(), None
    for bucket, worker, n, text in cur.fetchall():
        counts = np.asarray(orjson.loads(text), dtype=np.int64)
        if counts.shape != (size,):
            continue
        total += counts
        rows += int(n)
        workers.add(worker)
        first = int(bucket) if first is None else min(first, int(bucket))
    return LiveCounts(rows=rows, counts=total, workers=len(workers), first_bucket=first)
