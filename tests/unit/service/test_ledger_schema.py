"""The ledger's schema version: an old SQLite ledger (version 1, written by earlier releases) is
upgraded in place with its rows kept; a newer one is refused naming both versions; URLs are checked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.ledger.database import Database, LedgerUrlError, parse_url, redact
from service.ledger.schema import SCHEMA_VERSION, LedgerSchemaError, stored_version

VERSION_1 = """
CREATE TABLE predictions (request_id TEXT NOT NULL, row_index INTEGER NOT NULL, model TEXT NOT NULL,
    version INTEGER NOT NULL, served TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    outputs TEXT NOT NULL, PRIMARY KEY (request_id, row_index));
CREATE INDEX predictions_created ON predictions (created_at);
CREATE TABLE labels (request_id TEXT NOT NULL, row_index INTEGER NOT NULL, label_index INTEGER,
    value DOUBLE PRECISION, received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (request_id, row_index));
INSERT INTO predictions VALUES ('old', 0, 'm', 1, 'a', 1.0, '{"a": [0, 0.4, "s"]}');
INSERT INTO labels VALUES ('old', 0, 0, NULL, 2.0);
"""


def test_a_version_1_ledger_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1)
    db = Database(path)
    assert stored_version(db) == SCHEMA_VERSION == 4
    assert db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 1
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()}
    assert {"predictions_model_version", "input_bins_bucket"} <= indexes
    db.close()
    Database(path).close()  # opening a current ledger again changes nothing


def test_a_version_2_ledger_gets_the_input_counts_table(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1)
        conn.executescript(
            "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO ledger_meta VALUES ('schema_version', '2');"
        )
    db = Database(path)
    assert stored_version(db) == 4
    assert db.execute("SELECT COUNT(*) FROM input_bins").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1
    db.close()


def test_a_newer_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE ledger_meta SET value = '9' WHERE key = 'schema_version'")
    with pytest.raises(LedgerSchemaError, match=r"schema version 9, newer than this gateway's \(4\)"):
        Database(path)


@pytest.mark.parametrize(
    ("url", "kind", "location"),
    [
        ("sqlite:///relative/l.sqlite", "sqlite", "relative/l.sqlite"),
        ("sqlite:////abs/l.sqlite", "sqlite", "/abs/l.sqlite"),
        ("postgresql://u@db:5432/ledger", "postgresql", "postgresql://u@db:5432/ledger"),
    ],
)
def test_ledger_urls(url: str, kind: str, location: str) -> None:
    assert parse_url(url) == (kind, location)


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://", "postgresql:///nohost", "ledger.sqlite"])
def test_bad_ledger_urls_name_the_forms(url: str) -> None:
    with pytest.raises(LedgerUrlError, match="expected sqlite:///<path> or postgresql://"):
        parse_url(url)


def test_passwords_never_reach_logs() -> None:
    assert redact("postgresql://u:s3cret@db/ledger") == "postgresql://u:***@db/ledger"
