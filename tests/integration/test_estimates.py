"""Accuracy estimated before labels arrive (/compare's `estimate` per model): every classifier's card
carries its map, the estimate covers the rows without labels, and the check against the labels that
did arrive sits beside it."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from cli.compare import render
from contract.verify import verify
from service.core.gateway import Gateway
from service.settings import Settings
from tests.helpers import churn_frame, to_records


@pytest.fixture
def every_model(settings: Settings) -> Any:
    """A gateway whose every variant answers every request (shadows included), in-process."""
    from starlette.testclient import TestClient

    from service.http.app import build_app

    gw = Gateway(settings.model_copy(update={"shadow_fraction": 1.0}))
    gw.load()
    with TestClient(build_app(gw), base_url="http://gateway") as c:
        yield c
    gw.close()


def test_every_classifier_card_has_an_estimator(built_repo: Any) -> None:
    from contract.manifest import ModelCard

    manifest = verify(built_repo.version)
    for spec in [*manifest.members, *manifest.ensembles]:
        card = ModelCard.model_validate_json((built_repo.version / spec.card).read_text())
        est = card.accuracy_estimator
        assert est is not None, spec.name
        assert est.correct == sorted(est.correct) and est.correct[0] >= 0 and est.correct[-1] <= 1
        assert est.rows > 0 and abs(est.accuracy - card.metrics["validation"]["accuracy"]) < 1e-6


def test_estimates_on_unlabelled_rows_and_the_check_on_labelled_ones(every_model: Any) -> None:
    frame = churn_frame(1200, seed=11)
    labels = frame["target"].tolist()
    records = to_records(frame.drop(columns=["target", "row_id"]))
    for i in range(0, len(records), 50):
        r = every_model.post("/predict", json={"records": records[i : i + 50], "request_id": f"est-{i}"})
        assert r.status_code == 200, r.text
    # labels for the first 600 rows only
    body = [{"request_id": f"est-{i - i % 50}", "row": i % 50, "label": labels[i]} for i in range(600)]
    r = every_model.post("/feedback", json={"labels": body})
    assert r.status_code == 200 and r.json()["joined"] == 600, r.text
    doc = every_model.get("/compare").json()
    assert doc["estimates"]["unlabelled_rows"] == 600
    covered = 0
    for m in doc["models"]:
        est = m["estimate"]
        assert est["available"] and est["method"] == "cbpe", m["model"]
        un, check = est["unlabelled"], est["labelled_check"]
        assert un["rows"] == 600 and check["rows"] == 600
        assert un["low"] <= un["accuracy"] <= un["high"]
        assert check["actual"] == pytest.approx(m["online"], abs=1e-6)
        # the same distribution labelled and not: both estimates near the labelled rows' accuracy
        assert abs(check["error"]) < 0.1 and abs(un["accuracy"] - check["actual"]) < 0.1, m
        covered += check["covered"]
    assert covered >= 0.7 * len(doc["models"]), [m["estimate"]["labelled_check"] for m in doc["models"]]
    console = Console(record=True, width=200)
    render(doc, console)  # what `gateway compare` prints
    text = console.export_text()
    assert "Accuracy before labels (CBPE" in text and "600 most recent rows without a label" in text


def test_no_estimates_when_turned_off(settings: Settings) -> None:
    gw = Gateway(settings.model_copy(update={"estimate_max_rows": 0}))
    gw.load()
    try:
        assert "estimates" not in gw.compare()
    finally:
        gw.close()
