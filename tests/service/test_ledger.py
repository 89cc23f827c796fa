"""The ledger: batching, flush, retention, and what survives a graceful stop and a kill -9."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from contract.outputs import Output
from service.ledger.store import Entry, Ledger, transaction
from tests.service.conftest import BuiltRepo, start_server, stop_server


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
    from service.ledger.store import decode_outputs

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


def count(path: Path, where: str = "1=1") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM predictions WHERE {where}").fetchone()[0])


def test_flush_and_graceful_close_write_everything(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=30)
    for i in range(5):
        assert ledger.record(entry(f"r{i}"))
    assert ledger.flush(5)
    assert count(ledger.path) == 5 * 2  # one row per request row, all variants in it
    for i in range(5, 9):
        ledger.record(entry(f"r{i}"))
    ledger.close()  # long interval: only the graceful stop writes these
    assert count(ledger.path) == 9 * 2


def test_a_full_queue_drops_and_counts_without_blocking_the_caller(tmp_path: Path) -> None:
    import time

    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=30, max_queue=2)
    assert ledger.record(entry("a")) and ledger.record(entry("b"))
    start = time.monotonic()
    assert not ledger.record(entry("c"))
    assert time.monotonic() - start < 0.1
    assert ledger.dropped == 1
    ledger.close()
    assert count(ledger.path) == 2 * 2


def test_duplicate_request_ids_keep_the_first_record(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=0.01)
    ledger.record(entry("same", rows=1))
    ledger.record(entry("same", rows=1))
    ledger.close()
    assert count(ledger.path) == 1


def test_retention_deletes_old_unlabelled_rows_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite", flush_interval_s=0.01, retention_s=100, max_unlabelled_rows=1000)
    old = time.time() - 1000
    ledger.record(entry("old-unlabelled", created_at=old))
    ledger.record(entry("old-labelled", created_at=old))
    ledger.record(entry("new"))
    ledger.flush()
    with transaction(sqlite3.connect(ledger.path, isolation_level=None)) as c:
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


def _send(url: str, records: list[dict[str, Any]], prefix: str, n: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(n):
            r = c.post("/predict", json={"records": records[:1], "request_id": f"{prefix}-{i}"})
            assert r.status_code == 200, r.text


@pytest.mark.slow
def test_graceful_stop_loses_nothing(
    built_repo: BuiltRepo, feature_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    server = start_server(
        built_repo.root,
        tmp_path / "s.log",
        ledger=ledger,
        extra_env={"GATEWAY_LEDGER_FLUSH_INTERVAL_S": "30"},
    )
    _send(server.url, feature_records, "graceful", 40)
    stop_server(server)  # SIGTERM: the interval is 30 s, so only the shutdown flush can have written them
    assert count(ledger) == 40


@pytest.mark.slow
def test_kill_9_loses_at_most_the_last_flush_interval(
    built_repo: BuiltRepo, feature_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    server = start_server(
        built_repo.root,
        tmp_path / "s.log",
        ledger=ledger,
        extra_env={"GATEWAY_LEDGER_FLUSH_INTERVAL_S": "0.5"},
    )
    _send(server.url, feature_records, "early", 50)
    time.sleep(1.5)  # three flush intervals: all of these are committed
    _send(server.url, feature_records, "late", 20)
    server.managed.kill()  # the arbiter and its workers, by PID, at once
    early = count(ledger, "request_id LIKE 'early-%'")
    late = count(ledger, "request_id LIKE 'late-%'")
    print(f"kill -9: early requests recorded {early}/50, last-interval requests recorded {late}/20")
    assert early == 50
    # Everything that survived can still be joined after a restart.
    server = start_server(built_repo.root, tmp_path / "s2.log", ledger=ledger)
    try:
        labels = [{"request_id": f"early-{i}", "row": 0, "label": "stay"} for i in range(50)]
        r = httpx.post(f"{server.url}/feedback", json={"labels": labels}, timeout=30)
        assert r.json()["joined"] == 50
    finally:
        stop_server(server)
