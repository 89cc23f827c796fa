"""Faults injected into the ledger writer: a full disk, a read-only or locked database, a file deleted
or replaced while open. The property under each: every entry is committed or counted as unrecorded
with its reason (rows recorded + rows counted = rows given), and the writer recovers by itself."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from service.ledger.database import failure_reason
from service.ledger.entries import Entry
from service.ledger.store import Ledger
from tests.helpers import ledger_count, ledger_ids, remove_ledger, wait_until
from tests.unit.service.test_ledger import entry


class Outcomes:
    """What the writer reported, entry by entry (it calls back from its own thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.committed = 0
        self.unrecorded: dict[str, int] = {}

    def commit(self, e: Entry, inserted: int) -> None:
        with self.lock:
            self.committed += inserted

    def lost(self, reason: str, e: Entry) -> None:
        with self.lock:
            self.unrecorded[reason] = self.unrecorded.get(reason, 0) + e.row_count

    @property
    def counted(self) -> int:
        return sum(self.unrecorded.values())


def writer(path: Path, outcomes: Outcomes, **kw: object) -> Ledger:
    return Ledger(path, flush_interval_s=0.02, on_commit=outcomes.commit, on_unrecorded=outcomes.lost, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("database or disk is full", "ledger_full"),
        ("attempt to write a readonly database", "ledger_read_only"),
        ("database is locked", "ledger_locked"),
        ("disk I/O error", "ledger_io_error"),
        ("no such table: predictions", "ledger_error"),
    ],
)
def test_failure_reasons_from_sqlite_messages(message: str, reason: str) -> None:
    assert failure_reason(sqlite3.OperationalError(message)) == reason


def test_full_disk_rows_are_retried_then_counted_and_written_once_there_is_room(tmp_path: Path) -> None:
    """SQLite's max_page_count makes writes fail with SQLITE_FULL, as a full disk does (no root)."""
    out = Outcomes()
    ledger = writer(tmp_path / "l.sqlite", out, max_bytes=64 * 1024, retry_rows=400)
    given = 0
    for i in range(600):  # each entry is 2 rows; 64 KiB holds a few hundred
        ledger.record(entry(f"r{i}"))
        given += 2
    wait_until(lambda: ledger.health().state == "degraded", 10, "the ledger to report a full disk")
    health = ledger.health()
    assert health.reason == "ledger_full" and health.since is not None
    wait_until(lambda: out.unrecorded.get("ledger_full", 0) > 0, 10, "rows beyond the retry budget counted")
    assert ledger.health().pending_rows <= 400
    # Room again: the retried rows are written late, the ledger says ok.
    ledger._db.conn.execute("PRAGMA max_page_count=1000000")
    wait_until(lambda: ledger.health().state == "ok", 15, "the ledger to recover")
    ledger.close()
    recorded = ledger_count(ledger.path)
    assert recorded == out.committed
    assert recorded + out.counted == given, (recorded, out.unrecorded, given)
    assert set(out.unrecorded) == {"ledger_full"}
    print(f"full disk: given {given} rows, recorded {recorded}, counted ledger_full {out.counted}")


def test_read_only_database_rows_kept_while_memory_allows_then_counted_at_stop(tmp_path: Path) -> None:
    out = Outcomes()
    ledger = writer(tmp_path / "l.sqlite", out)
    ledger.record(entry("before"))
    assert ledger.flush()
    # Root can write to a chmod-444 file, so read-only is injected the way SQLite reports it.
    ledger._db.conn.execute("PRAGMA query_only=1")
    for i in range(10):
        ledger.record(entry(f"ro{i}"))
    wait_until(lambda: ledger.health().reason == "ledger_read_only", 10, "read-only reported")
    assert not ledger.flush(1)
    assert ledger.health().pending_rows == 20
    ledger.close()  # still read-only at the stop: counted, not dropped silently
    assert ledger_count(ledger.path) == 2
    assert out.unrecorded == {"ledger_read_only": 20}
    assert ledger_count(ledger.path) + out.counted == 22


def test_locked_database_waits_and_writes_when_the_lock_is_released(tmp_path: Path) -> None:
    out = Outcomes()
    path = tmp_path / "l.sqlite"
    ledger = writer(path, out)
    ledger._db.conn.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(5):
            ledger.record(entry(f"l{i}"))
        wait_until(lambda: ledger.health().reason == "ledger_locked", 10, "locked reported")
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait_until(lambda: ledger.health().state == "ok", 15, "writes after the lock")
    ledger.close()
    assert ledger_count(path) == 10 and out.committed == 10 and out.counted == 0


def test_a_deleted_file_is_noticed_and_recreated_not_written_into_the_void(tmp_path: Path) -> None:
    out = Outcomes()
    path = tmp_path / "l.sqlite"
    ledger = writer(path, out)
    ledger.record(entry("old"))
    assert ledger.flush()
    remove_ledger(path)
    ledger.record(entry("new"))
    assert ledger.flush()
    assert ledger.health().reopened == 1
    ledger.close()
    assert ledger_ids(path) == {
        "new"
    }  # the new file holds what came after; nothing went to the unlinked inode
    assert out.committed == 4  # both entries were committed (the first to the file later deleted)


def test_a_replaced_file_is_noticed_and_written_to(tmp_path: Path) -> None:
    out = Outcomes()
    path = tmp_path / "l.sqlite"
    ledger = writer(path, out)
    ledger.record(entry("a"))
    assert ledger.flush()
    # Restore from a backup: another ledger file moved over this one.
    backup = tmp_path / "backup.sqlite"
    other = writer(backup, Outcomes())
    other.record(entry("from-backup"))
    other.close()
    remove_ledger(path)
    os.replace(backup, path)
    ledger.record(entry("b"))
    assert ledger.flush()
    assert ledger.health().reopened == 1
    ledger.close()
    assert ledger_ids(path) == {"from-backup", "b"}


def test_degraded_spell_backs_off_and_keeps_order(tmp_path: Path) -> None:
    """While writes fail, tries are spaced out (not a hot loop); the rows land in the order given."""
    out = Outcomes()
    ledger = writer(tmp_path / "l.sqlite", out)
    ledger._db.conn.execute("PRAGMA query_only=1")
    for i in range(3):
        ledger.record(entry(f"o{i}", created_at=1000.0 + i))
    wait_until(lambda: ledger._failures >= 3, 10, "three failed tries")
    tries = ledger._failures
    time.sleep(0.3)
    assert ledger._failures <= tries + 3  # back-off: 0.16 s, 0.32 s, ... not every 20 ms
    ledger._db.conn.execute("PRAGMA query_only=0")
    assert ledger.flush(10)
    ledger.close()
    order = [
        r
        for (r,) in sqlite3.connect(ledger.path).execute(
            "SELECT request_id FROM predictions WHERE row_index=0 ORDER BY rowid"
        )
    ]
    assert order == ["o0", "o1", "o2"]
