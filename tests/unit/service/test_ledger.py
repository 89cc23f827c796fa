"""The ledger: batching, flush, retention, and what survives a graceful stop and a kill -9."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from contract.outputs import Output
from service.ledger.database import Database
from service.ledger.entries import Entry
from service.ledger.store import Ledger
from tests.helpers import ledger_count


def entry(rid: str, rows: int = 2, created_at: float | None = None) -> Entry:
    out = Output(labels=np.zeros(rows, dtype=np.int64), proba=np.tile([0.7, 0.3], (rows, 1)))
    return Entry(
        request_ids=[rid],
        rows=[rows],
        served=[("a", out)],
        model="m",
        version=1,
        created_at=created_at or time.time(),
        outputs={"b": ("shadow", out)},
    )


def test_a_batch_entry_records_each_request_with_its_own_served_answer(tmp_path: Path) -> None:
    from service.ledger.schema import decode_outputs

    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=30)
    batch = Output(labels=np.array([0, 1, 1]), proba=np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]))
    one = Output(labels=np.array([1]), proba=np.array([[0.3, 0.7]]))
    two = Output(labels=np.array([0, 0]), proba=np.array([[0.6, 0.4], [0.7, 0.3]]))
    ledger.record(
        Entry(
            request_ids=["x", "y"],
            rows=[1, 2],
            served=[("a", one), ("b", two)],
            model="m",
            version=1,
            created_at=1.0,
            outputs={"b": ("shadow", batch), "c": ("member", batch)},
        )
    )
    ledger.close()
    with sqlite3.connect(ledger.path) as conn:
        rows = conn.execute(
            "SELECT request_id, row_index, served, outputs FROM predictions ORDER BY 1, 2"
        ).fetchall()
    docs = {(r[0], r[1]): (r[2], decode_outputs(r[3])) for r in rows}
    assert docs[("x", 0)] == (
        "a",
        {"a": (1, 0.7, "served"), "b": (0, 0.1, "shadow"), "c": (0, 0.1, "member")},
    )
    assert docs[("y", 1)] == ("b", {"b": (0, 0.3, "served"), "c": (1, 0.6, "member")})


def test_flush_and_graceful_close_write_everything(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=30)
    for i in range(5):
        assert ledger.record(entry(f"r{i}"))
    assert ledger.flush(5)
    assert ledger_count(ledger.path) == 5 * 2  # one row per request row, all variants in it
    for i in range(5, 9):
        ledger.record(entry(f"r{i}"))
    ledger.close()  # long interval: only the graceful stop writes these
    assert ledger_count(ledger.path) == 9 * 2


def test_a_full_queue_drops_and_counts_without_blocking_the_caller(tmp_path: Path) -> None:
    import time

    unrecorded: list[tuple[str, Entry]] = []
    ledger = Ledger(
        tmp_path / "l.sqlite",
        flush_interval_s=30,
        max_queue=2,
        on_unrecorded=lambda r, e: unrecorded.append((r, e)),
    )
    assert ledger.record(entry("a")) and ledger.record(entry("b"))
    start = time.monotonic()
    assert not ledger.record(entry("c"))
    assert time.monotonic() - start < 0.1
    assert [(r, e.request_ids) for r, e in unrecorded] == [("ledger_queue_full", ["c"])]
    ledger.close()
    assert ledger_count(ledger.path) == 2 * 2


def test_duplicate_ids_keep_the_first_record(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=0.01)
    ledger.record(entry("same", rows=1))
    ledger.record(entry("same", rows=1))
    ledger.close()
    assert ledger_count(ledger.path) == 1


def test_retention_deletes_old_unlabelled_rows_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=0.01, retention_s=100, max_unlabelled_rows=1000)
    old = time.time() - 1000
    ledger.record(entry("old-unlabelled", created_at=old))
    ledger.record(entry("old-labelled", created_at=old))
    ledger.record(entry("new"))
    ledger.flush()
    with Database(ledger.path).transaction() as c:
        c.execute("INSERT INTO labels VALUES ('old-labelled', 0, 0, NULL, 0)")
    deleted = ledger.cleanup()
    assert deleted == 3  # old-unlabelled's 2 rows, and old-labelled's unlabelled row 1
    remaining = {
        r for (r,) in sqlite3.connect(ledger.path).execute("SELECT DISTINCT request_id FROM predictions")
    }
    assert remaining == {"old-labelled", "new"}
    ledger.close()


def test_row_cap_keeps_the_newest(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=0.01, max_unlabelled_rows=1000)
    ledger.max_unlabelled_rows = 4  # below the setting's floor, to keep the test small
    for i in range(5):
        ledger.record(entry(f"r{i}", created_at=1000 + i))
    ledger.flush()
    assert ledger.cleanup(now=1000) == 6
    ids = {r for (r,) in sqlite3.connect(ledger.path).execute("SELECT DISTINCT request_id FROM predictions")}
    assert ids == {"r3", "r4"}
    ledger.close()
