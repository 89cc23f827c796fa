"""Routing decisions in the ledger: promotions of a challenger the sequential test called better, and
their rollbacks, with the evidence. Shared by every worker and replica (each applies a decision it has
not applied yet), and kept as the record of why the champion changed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from service.ledger.database import Database

Action = Literal["promote", "rollback"]


@dataclass(frozen=True)
class Decision:
    """One change of champion of one repository version."""

    action: Action
    model: str
    version: int
    champion_before: str
    champion_after: str
    evidence: dict[str, Any]
    decided_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "decided_at": self.decided_at,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "evidence": self.evidence,
        }


LOCK = 7_316_002
"""PostgreSQL advisory lock: replicas deciding at once take turns."""


def record(db: Database, decision: Decision, after: str | None) -> bool:
    """Write one decision if the version's latest decision is still ``after`` (None: there was none),
    committed before it is applied or answered; False when another worker or replica decided first."""
    with db.transaction():
        if db.kind != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises writers
            db.execute("SELECT pg_advisory_xact_lock(?)", (LOCK,))
        latest = db.execute(
            "SELECT id FROM routing_decisions WHERE model = ? AND version = ? "
            "ORDER BY decided_at DESC, id DESC LIMIT 1",
            (decision.model, decision.version),
        ).fetchone()
        if (latest[0] if latest else None) != after:
            return False
        db.execute(
            "INSERT INTO routing_decisions (id, model, version, decided_at, action, champion_before, "
            "champion_after, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                decision.id,
                decision.model,
                decision.version,
                decision.decided_at,
                decision.action,
                decision.champion_before,
                decision.champion_after,
                orjson.dumps(decision.evidence).decode(),
            ),
        )
    return True


def history(db: Database, model: str, version: int) -> list[Decision]:
    """Every decision of one version, oldest first."""
    rows = db.execute(
        "SELECT id, decided_at, action, champion_before, champion_after, evidence FROM routing_decisions "
        "WHERE model = ? AND version = ? ORDER BY decided_at, id",
        (model, version),
    ).fetchall()
    return [
        Decision(
            action=action,
            model=model,
            version=version,
            champion_before=before,
            champion_after=after,
            evidence=orjson.loads(evidence),
            decided_at=float(at),
            id=did,
        )
        for did, at, action, before, after, evidence in rows
    ]
