"""Promotion of a challenger the always-valid test calls better (GATEWAY_PROMOTE), its evidence in the
ledger, other workers following the decision, the latency guardrail, and rollback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.core.gateway import Gateway
from service.http.app import build_app
from service.settings import Settings
from tests.helpers import ADMIN_TOKEN, churn_frame, to_records

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _gateway(settings: Settings, **update: Any) -> Gateway:
    gw = Gateway(settings.model_copy(update={"shadow_fraction": 1.0, **update}))
    gw.load()
    return gw


@pytest.fixture
def promoting(settings: Settings) -> Iterator[tuple[Gateway, TestClient]]:
    gw = _gateway(settings, promote=True, promote_min_labels=100)
    with TestClient(build_app(gw), base_url="http://gateway") as c:
        yield gw, c
    gw.close()


def _labels_agreeing_with(c: TestClient, variant: str, n: int) -> None:
    """n rows answered by the champion (every other variant in shadow), each labelled with the answer
    of the member ``variant``: it is right on every row, the others where they agree with it."""
    records = to_records(churn_frame(n, seed=21).drop(columns=["target", "row_id"]))
    labels = []
    for i in range(0, n, 50):
        body = {"records": records[i : i + 50], "request_id": f"promo-{i}", "return_members": True}
        r = c.post("/predict", json=body)
        assert r.status_code == 200, r.text
        answers = r.json()["members"][variant]
        labels += [{"request_id": f"promo-{i}", "row": j, "label": p["label"]} for j, p in enumerate(answers)]
    r = c.post("/feedback", json={"labels": labels})
    assert r.status_code == 200 and r.json()["joined"] == n, r.text


def test_a_better_challenger_is_promoted_followed_and_rolled_back(
    promoting: tuple[Gateway, TestClient], settings: Settings
) -> None:
    gw, c = promoting
    before = gw.router.champion
    _labels_agreeing_with(c, "dummy", 600)
    doc = c.get("/compare").json()
    promotion = doc["promotion"]
    decision = promotion["decision"]
    assert promotion["enabled"] and decision is not None and decision["action"] == "promote", promotion
    after = decision["champion_after"]
    assert decision["champion_before"] == before != after == gw.router.champion
    evidence = decision["evidence"]
    assert evidence["n"] >= 100 and evidence["always_valid_p"] < 0.05 and evidence["latency_ratio"] <= 1.5
    assert evidence["challenger_score"] > evidence["champion_score"]
    assert before in gw.router.shadow  # the old champion stays compared
    assert c.get("/models").json()["routing"]["champion"] == after

    other = _gateway(settings)  # another worker on the same ledger applies it at load
    try:
        assert other.router.champion == after
        r = c.post("/admin/rollback", headers=AUTH)
        assert r.status_code == 200, r.text
        undone = r.json()
        assert undone["action"] == "rollback" and undone["champion_after"] == before
        assert undone["evidence"]["rolls_back"] == decision["id"]
        assert gw.router.champion == before
        other.promoter.sync()
        assert other.router.champion == before
    finally:
        other.close()

    again = c.get("/compare").json()["promotion"]
    blocked = {x["challenger"]: x for x in again["candidates"]}[after]["blocked_by"]
    assert any("rolled back" in b for b in blocked), blocked
    assert again["decision"] is None or again["decision"]["champion_after"] != after
    assert [d["action"] for d in c.get("/admin/decisions", headers=AUTH).json()["decisions"]][:2] == [
        "promote",
        "rollback",
    ]
    if again["decision"] is None:
        r = c.post("/admin/rollback", headers=AUTH)
        assert r.status_code == 409 and r.json()["error"].startswith("rollback: nothing to roll back"), r.text


def test_the_latency_guardrail_and_the_default_keep_the_champion(settings: Settings) -> None:
    for update, reason in (
        ({"promote": True, "promote_min_labels": 100, "promote_max_latency_ratio": 1e-6}, "latency"),
        ({}, None),
    ):
        gw = _gateway(
            settings.model_copy(
                update={"ledger_path": settings.ledger_path.with_name(f"l{len(update)}.sqlite")}
            ),
            **update,
        )
        try:
            with TestClient(build_app(gw), base_url="http://gateway") as c:
                before = gw.router.champion
                _labels_agreeing_with(c, "dummy", 600)
                promotion = c.get("/compare").json()["promotion"]
                assert gw.router.champion == before and promotion["decision"] is None
                if reason is None:
                    assert promotion["enabled"] is False
                else:
                    better = [x for x in promotion["candidates"] if x["blocked_by"][:1] == []]
                    assert not better
                    dummy = {x["challenger"]: x for x in promotion["candidates"]}["dummy"]
                    assert any(reason in b for b in dummy["blocked_by"]), dummy
        finally:
            gw.close()


def test_rollback_needs_the_admin_token(promoting: tuple[Gateway, TestClient]) -> None:
    _, c = promoting
    assert c.post("/admin/rollback").status_code == 401


def test_a_ledger_that_cannot_record_the_decision_changes_nothing(
    promoting: tuple[Gateway, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while recording a promotion (injected): /compare still answers, says why in
    ``promotion.error``, and the champion stays; a rollback then answers 503 and changes nothing."""
    import sqlite3

    from service.core import promotion

    gw, c = promoting
    before = gw.router.champion
    _labels_agreeing_with(c, "dummy", 600)

    def full(*args: Any, **kwargs: Any) -> bool:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(promotion, "record", full)
    r = c.get("/compare")
    assert r.status_code == 200, r.text
    doc = r.json()["promotion"]
    assert doc["decision"] is None and "ledger_full" in doc["error"], doc
    assert gw.router.champion == before
    r = c.post("/admin/rollback", headers=AUTH)
    assert r.status_code == 409  # nothing was recorded, so nothing to roll back
    monkeypatch.undo()
    assert c.get("/compare").json()["promotion"]["decision"]["champion_before"] == before  # now it can
