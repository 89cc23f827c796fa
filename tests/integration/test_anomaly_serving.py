"""A detector repository served as a binary one: every variant's flags reproduce its card's test
precision and recall, labels join, and /compare gives precision/recall with intervals and paired recall
tests between detectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.verify import load_card, verify
from service.core.gateway import Gateway
from tests.helpers import BuiltRepo, BundledBuild, in_process_gateway, sample


@pytest.fixture
def anomaly_client(anomaly_repo: BundledBuild, tmp_path: Path) -> Iterator[tuple[Any, Gateway]]:
    with in_process_gateway(anomaly_repo.version_dir.parent.parent, tmp_path / "ledger.sqlite") as served:
        yield served


def _records(build: BundledBuild) -> list[dict[str, Any]]:
    n = len(build.y_test)
    return [{name: float(values[i]) for name, values in build.test_rows.items()} for i in range(n)]


def test_served_flags_reproduce_offline_precision_and_recall(
    anomaly_client: tuple[Any, Gateway], anomaly_repo: BundledBuild
) -> None:
    client, gw = anomaly_client
    records, truth = _records(anomaly_repo), anomaly_repo.y_test == 1
    for name, card in gw.repo.cards.items():
        r = client.post("/predict", json={"records": records, "variant": name})
        assert r.status_code == 200, r.text
        flagged = np.array([p["label"] == "malignant" for p in r.json()["predictions"]])
        tp = int(np.sum(flagged & truth))
        assert tp / max(int(flagged.sum()), 1) == pytest.approx(card.metrics["test"]["precision"]), name
        assert tp / int(truth.sum()) == pytest.approx(card.metrics["test"]["recall"]), name


def test_compare_gives_detection_intervals_and_paired_recall_tests(
    anomaly_client: tuple[Any, Gateway], anomaly_repo: BundledBuild
) -> None:
    client, gw = anomaly_client
    records = _records(anomaly_repo)
    labels = ["malignant" if y == 1 else "benign" for y in anomaly_repo.y_test]
    assert client.post("/predict", json={"records": records, "request_id": "an-1"}).status_code == 200
    assert gw.recording.barrier(10)
    fb = client.post(
        "/feedback",
        json={"labels": [{"request_id": "an-1", "row": i, "label": y} for i, y in enumerate(labels)]},
    ).json()
    assert fb["joined"] == len(labels), fb

    doc = client.get("/compare").json()

    by_model = {m["model"]: m for m in doc["models"]}
    assert set(by_model) == set(gw.repo.variants)
    assert doc["metric"] == "average_precision", "detectors are ranked on average precision"
    assert " Recall on the true anomalies" in doc["summary"], doc["summary"]
    assert doc["best_offline"] != "dummy" and doc["best_online"] != "dummy"
    for name, m in by_model.items():
        d = m["detection"]
        assert m["online"] == d["average_precision"] and m["low"] <= m["online"] <= m["high"], name
        assert m["offline"] == gw.repo.cards[name].metrics["test"]["average_precision"], name
        assert d["n"] == len(labels) and d["positives"] == labels.count("malignant"), name
        assert d["recall_low"] <= d["recall"] <= d["recall_high"], name
        assert d["offline_recall"] == pytest.approx(d["recall"]), name  # the same test rows as offline
        assert d["average_precision"] == pytest.approx(d["offline_average_precision"], abs=1e-6), name
        for metric in ("recall", "recall_high", "precision_low", "average_precision"):
            gauge = sample("gateway_online_detection", model=name, metric=metric)
            assert gauge == pytest.approx(d[metric] or 0.0), (name, metric)
    for t in doc["tests"]:
        r = t["recall_test"]
        assert r["anomalies"] == labels.count("malignant") and r["p_value"] is not None
        assert r["only_champion_flagged"] + r["only_challenger_flagged"] <= r["anomalies"]


def test_a_build_without_labels_serves_the_rank_average_and_is_judged_online(
    unlabelled_repo: BuiltRepo, tmp_path: Path
) -> None:
    from builders.data import load_wbc_outliers

    manifest = verify(unlabelled_repo.version)
    assert manifest.classes == ["normal", "anomaly"] and manifest.target == ""
    assert [m.name for m in manifest.members] == ["isolation_forest", "lof", "one_class_svm", "knn_distance"]
    assert manifest.routing.champion == "average" and set(manifest.routing.shadow) == {
        m.name for m in manifest.members
    }
    for spec in manifest.members:
        card = load_card(unlabelled_repo.version / spec.card)
        assert card.metrics == {} and card.parity is not None and card.parity.passed
    assert "without labels" in (unlabelled_repo.version / "report.md").read_text()

    table = load_wbc_outliers()
    truth = table.pop("diagnosis")
    records = [{k: float(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
    with in_process_gateway(unlabelled_repo.root, tmp_path / "ledger.sqlite", max_batch_rows=400) as (
        client,
        gw,
    ):
        r = client.post("/predict", json={"records": records, "request_id": "u-1"})
        assert r.status_code == 200, r.text
        flagged = [p["label"] == "anomaly" for p in r.json()["predictions"]]
        assert 0.03 <= np.mean(flagged) <= 0.2
        assert gw.recording.barrier(10)
        labels = [
            {"request_id": "u-1", "row": i, "label": "anomaly" if y == "malignant" else "normal"}
            for i, y in enumerate(truth)
        ]
        assert client.post("/feedback", json={"labels": labels}).json()["joined"] == len(labels)
        doc = client.get("/compare").json()
    assert doc["labelled_rows"] == len(labels) and doc["best_online"]
    assert doc["summary"].startswith("Offline winner: none (no offline scores: built without labels)")
    by_model = {m["model"]: m for m in doc["models"]}
    assert set(by_model) == set(manifest.variant_names())
    for m in by_model.values():
        d = m["detection"]
        assert m["offline"] is None and d["offline_recall"] is None
        assert d["positives"] == 21 and d["precision_low"] <= d["precision"] <= d["precision_high"]
        assert d["average_precision"] > 0.3, m["model"]  # far above the 21/378 of chance
    assert {t["challenger"] for t in doc["tests"]} == {s.name for s in manifest.members}
