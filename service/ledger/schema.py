"""The ledger's tables: one of predictions (a row per request row, every variant's output in one
document) and one of labels; plain SQL for SQLite and PostgreSQL alike, with a schema version.

Version 1 is the SQLite ledger of earlier releases (no version table). Version 2 adds the version
table and an index for counting a model version's rows; on PostgreSQL, labels also carry a sequence
number and the id of the transaction that wrote them, so /compare can read new labels incrementally
while several replicas write (service/ledger/reads.py). A ledger at an older version is upgraded
when opened; one newer than this gateway is refused, naming both versions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from service.ledger.database import Database

SCHEMA_VERSION = 4
ROLE_CODES = {"served": "s", "shadow": "h", "member": "m"}
ROLES_BY_CODE = {v: k for k, v in ROLE_CODES.items()}
# Any constant: replicas creating or upgrading the schema at once take turns on it.
SCHEMA_LOCK = 7_316_001

PREDICTIONS = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    served TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    outputs TEXT NOT NULL,
    PRIMARY KEY (request_id, row_index)
)"""
LABELS = """
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    label_index INTEGER,
    value DOUBLE PRECISION,
    received_at DOUBLE PRECISION NOT NULL,{extra}
    PRIMARY KEY (request_id, row_index)
)"""
# PostgreSQL: the sequence and writing transaction of each label (incremental reads, reads.py)
LABELS_POSTGRESQL_EXTRA = """
    seq BIGSERIAL NOT NULL,
    txid XID8 NOT NULL DEFAULT pg_current_xact_id(),"""
VERSION_1 = ["CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_at)"]
UPGRADES = {
    # from version 1 (and for a new ledger, after version 1's tables)
    1: [
        "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS predictions_model_version ON predictions (model, version)",
    ],
    # live input bin counts per worker and minute (service/drift): one row a worker rewrites
    2: [
        """CREATE TABLE IF NOT EXISTS input_bins (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    bucket BIGINT NOT NULL,
    worker TEXT NOT NULL,
    n_rows BIGINT NOT NULL,
    counts TEXT NOT NULL,
    PRIMARY KEY (model, version, bucket, worker)
)""",
        "CREATE INDEX IF NOT EXISTS input_bins_bucket ON input_bins (bucket)",
    ],
    # promotions and rollbacks of the champion, with their evidence (service/ledger/decisions.py)
    3: [
        """CREATE TABLE IF NOT EXISTS routing_decisions (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    decided_at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    champion_before TEXT NOT NULL,
    champion_after TEXT NOT NULL,
    evidence TEXT NOT NULL
)""",
        "CREATE INDEX IF NOT EXISTS routing_decisions_version ON routing_decisions (model, version, decided_at)",
    ],
}


class LedgerSchemaError(RuntimeError):
    """A ledger this gateway cannot use as it is (written by a newer gateway)."""


def _has_table(db: Database, name: str) -> bool:
    if db.kind == "sqlite":
        return (
            db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
            is not None
        )
    return db.execute("SELECT to_regclass(?)", (name,)).fetchone()[0] is not None


def stored_version(db: Database) -> int | None:
    """The schema version of the ledger (None: empty, no tables yet)."""
    if _has_table(db, "ledger_meta"):
        row = db.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1 if _has_table(db, "predictions") else None


def _refuse_newer(db: Database, found: int | None) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise LedgerSchemaError(
            f"ledger {db.display} has schema version {found}, newer than this gateway's "
            f"({SCHEMA_VERSION}): run the newer gateway, or point GATEWAY_LEDGER_URL at another ledger"
        )


def ensure_schema(db: Database) -> int | None:
    """Create the tables, or upgrade them to SCHEMA_VERSION, in one transaction; returns the version
    found (None: a new ledger). Refuses a newer ledger. A ledger already current is only read (a
    read-only SQLite file still opens)."""
    found = stored_version(db)
    _refuse_newer(db, found)
    if found == SCHEMA_VERSION:
        return found
    with db.transaction():
        if db.kind != "sqlite":
            db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
        found = stored_version(db)  # another replica may have done it meanwhile
        _refuse_newer(db, found)
        if found == SCHEMA_VERSION:
            return found
        if found is None:
            db.execute(PREDICTIONS)
            db.execute(LABELS.format(extra="" if db.kind == "sqlite" else LABELS_POSTGRESQL_EXTRA))
            for statement in VERSION_1:
                db.execute(statement)
        for version in range(found or 1, SCHEMA_VERSION):
            for statement in UPGRADES[version]:
                db.execute(statement)
        db.execute("DELETE FROM ledger_meta WHERE key = 'schema_version'")
        db.execute(
            "INSERT INTO ledger_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    return found


def decode_outputs(text: str) -> dict[str, tuple[int | None, float, str]]:
    """variant -> (class index, score, role) from a stored outputs document."""
    return {v: (o[0], o[1], ROLES_BY_CODE[o[2]]) for v, o in orjson.loads(text).items()}
