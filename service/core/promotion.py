"""Promotion of a challenger that the always-valid sequential test calls better (opt-in:
GATEWAY_PROMOTE), and rollback (the admin API).

A challenger is promoted only when, on the rows both answered with labels, its verdict is
"challenger is better" (always-valid p below 5%, Bonferroni over the comparisons: safe however often
/compare is read), at least GATEWAY_PROMOTE_MIN_LABELS paired labels back it, its single-row latency on
its card is at most GATEWAY_PROMOTE_MAX_LATENCY_RATIO times the champion's, and it was not rolled
back before for this version. The decision and its evidence are written to the ledger first
(service/ledger/decisions.py), then applied; every worker and replica applies decisions it has not
applied yet, at load and every GATEWAY_DECISION_SYNC_S.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from contract.manifest import ModelCard, Routing
from service.core.routing import Router
from service.errors import Conflict, LedgerUnavailable
from service.ledger.database import Database, database_errors, failure_reason
from service.ledger.decisions import Decision, history, record
from service.ledger.schema import ensure_schema
from service.runtime.repository import LoadedRepository
from service.settings import Settings

log = logging.getLogger(__name__)


def _latency(card: ModelCard | None) -> float | None:
    return card.latency.onnx_single_row_us if card is not None and card.latency is not None else None


def candidates(
    doc: Mapping[str, Any], cards: Mapping[str, ModelCard], settings: Settings, rolled_back: set[str]
) -> list[dict[str, Any]]:
    """Every challenger of a /compare document with what allows or blocks its promotion."""
    champion_latency = _latency(cards.get(doc["champion"]))
    out = []
    for t in doc["tests"]:
        name = t["challenger"]
        blocked = []
        if t["verdict"] != "challenger is better":
            blocked.append(f"verdict: {t['verdict']}")
        if t["n"] < settings.promote_min_labels:
            blocked.append(f"{t['n']} paired labels, fewer than {settings.promote_min_labels}")
        latency = _latency(cards.get(name))
        ratio = latency / champion_latency if latency is not None and champion_latency else None
        if ratio is None:
            blocked.append("no single-row latency on the cards to check")
        elif ratio > settings.promote_max_latency_ratio:
            blocked.append(
                f"latency {ratio:.2f}x the champion's, above {settings.promote_max_latency_ratio}x"
            )
        if name in rolled_back:
            blocked.append("promoted and rolled back before for this version")
        out.append(
            {
                "challenger": name,
                "n": t["n"],
                "champion_score": t["champion_score"],
                "challenger_score": t["challenger_score"],
                "always_valid_p": t.get("always_valid_p"),
                "latency_ratio": round(ratio, 3) if ratio is not None else None,
                "eligible": not blocked,
                "blocked_by": blocked,
            }
        )
    return out


def choose(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The eligible challenger with the strongest evidence (smallest always-valid p, then score)."""
    eligible = [c for c in found if c["eligible"]]
    if not eligible:
        return None
    return min(
        eligible, key=lambda c: (c["always_valid_p"], -(c["challenger_score"] or 0.0), c["challenger"])
    )


def rolled_back(decisions: list[Decision]) -> set[str]:
    """Challengers whose promotion was rolled back (never promoted again automatically)."""
    by_id = {d.id: d for d in decisions}
    out = set()
    for d in decisions:
        undone = by_id.get(d.evidence.get("rolls_back", ""))
        if d.action == "rollback" and undone is not None:
            out.add(undone.champion_after)
    return out


def with_champion(routing: Routing, champion: str) -> Routing:
    """The routing with a new champion; the old one is kept as a shadow so it stays compared."""
    old = routing.champion
    shadow = [n for n in routing.shadow if n != champion]
    if old != champion and old not in shadow:
        shadow.append(old)
    challengers = {n: w for n, w in routing.challengers.items() if n != champion}
    return Routing(
        champion=champion, challengers=challengers, shadow=shadow, shadow_fraction=routing.shadow_fraction
    )


class Promoter:
    """The worker's side of routing decisions: promote on /compare (when enabled), roll back, and
    follow the decisions other workers and replicas wrote."""

    def __init__(
        self,
        settings: Settings,
        current: Callable[[], tuple[LoadedRepository, Router]],
        apply: Callable[[Routing], Router],
    ) -> None:
        self.settings = settings
        self._current, self._apply = current, apply
        self._applied: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def _ledger(self) -> Iterator[Database]:
        """A connection of the calling thread, with the schema in place, closed after use."""
        db = Database(self.settings.ledger_target)
        try:
            ensure_schema(db)
            yield db
        finally:
            db.close()

    def start(self) -> None:
        if self._thread is None and self.settings.ledger_enabled:
            self._thread = threading.Thread(target=self._run, name="routing-decisions", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.decision_sync_s):
            try:
                self.sync()
            except database_errors() as exc:
                log.warning("routing decisions not read (%s: %s)", failure_reason(exc), exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sync(self) -> None:
        """Apply the newest decision of the served version this worker has not applied yet (at load,
        and every GATEWAY_DECISION_SYNC_S); an admin routing change made since is left alone until
        the next decision."""
        if not self.settings.ledger_enabled:
            return
        repo, _ = self._current()
        m = repo.manifest
        with self._ledger() as db:
            found = history(db, m.name, m.version)
        with self._lock:
            new = [d for d in found if d.id not in self._applied]
            if not new:
                return
            self._applied.update(d.id for d in new)
            latest = new[-1]
            if latest.champion_after in repo.variants:
                self._switch(latest.champion_after)
                log.info("routing decision %s applied: champion %s", latest.id, latest.champion_after)

    def _switch(self, champion: str) -> None:
        _, router = self._current()
        if router.champion != champion:
            self._apply(with_champion(router.as_routing(), champion))

    def consider(self, doc: dict[str, Any], cards: Mapping[str, ModelCard]) -> dict[str, Any]:
        """The /compare document's ``promotion``: each challenger's case, and the decision if one was
        made now (written to the ledger first, then applied)."""
        s = self.settings
        out: dict[str, Any] = {
            "enabled": s.promote,
            "min_labels": s.promote_min_labels,
            "max_latency_ratio": s.promote_max_latency_ratio,
            "decision": None,
            "last_decision": None,
            "candidates": [],
        }
        try:
            with self._ledger() as db:
                self._decide(db, doc, cards, out)
        except database_errors() as exc:
            out["error"] = f"ledger: {failure_reason(exc)}: {exc}"
        return out

    def _decide(
        self, db: Database, doc: dict[str, Any], cards: Mapping[str, ModelCard], out: dict[str, Any]
    ) -> None:
        """Fill ``out`` with the cases, and promote the strongest eligible challenger if there is one."""
        s = self.settings
        m = self._current()[0].manifest
        found = history(db, m.name, m.version)
        out["last_decision"] = found[-1].document() if found else None
        if not s.promote:
            return
        out["candidates"] = cases = candidates(doc, cards, s, rolled_back(found))
        pick = choose(cases)
        if pick is None:
            return
        decision = Decision(
            "promote",
            m.name,
            m.version,
            champion_before=doc["champion"],
            champion_after=pick["challenger"],
            evidence={
                **{k: v for k, v in pick.items() if k not in ("eligible", "blocked_by", "challenger")},
                "labelled_rows": doc["labelled_rows"],
                "test": "always-valid sequential test vs the champion (Bonferroni), p < 0.05",
                "min_labels": s.promote_min_labels,
                "max_latency_ratio": s.promote_max_latency_ratio,
            },
        )
        with self._lock:
            if record(db, decision, found[-1].id if found else None):
                self._applied.add(decision.id)
                self._switch(decision.champion_after)
                out["decision"] = out["last_decision"] = decision.document()
                log.warning("promoted %s over %s: %s", decision.champion_after, doc["champion"], pick)

    def rollback(self) -> dict[str, Any]:
        """Undo the newest promotion of the served version (POST /admin/rollback)."""
        try:
            return self._rollback()
        except database_errors() as exc:
            raise LedgerUnavailable(f"ledger: {failure_reason(exc)}: {exc}; nothing was changed") from exc

    def _rollback(self) -> dict[str, Any]:
        repo, router = self._current()
        m = repo.manifest
        with self._ledger() as db:
            found = history(db, m.name, m.version)
            if not found or found[-1].action != "promote":
                raise Conflict(
                    "rollback: nothing to roll back (the newest decision of this version is "
                    + (f"a {found[-1].action})" if found else "none)")
                )
            undo = found[-1]
            decision = Decision(
                "rollback",
                m.name,
                m.version,
                champion_before=router.champion,
                champion_after=undo.champion_before,
                evidence={"rolls_back": undo.id, "promoted": undo.champion_after},
            )
            with self._lock:
                if not record(db, decision, undo.id):
                    raise Conflict("rollback: another decision was made meanwhile; read /admin/decisions")
                self._applied.add(decision.id)
                self._switch(decision.champion_after)
        return decision.document()

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision of the served version, oldest first (GET /admin/decisions)."""
        repo, _ = self._current()
        try:
            with self._ledger() as db:
                return [d.document() for d in history(db, repo.manifest.name, repo.manifest.version)]
        except database_errors() as exc:
            raise LedgerUnavailable(f"ledger: {failure_reason(exc)}: {exc}") from exc
