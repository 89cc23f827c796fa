"""Feedback joins, metrics by sample value, and /compare on real recorded traffic (in-process)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from service import metrics
from service.core.gateway import Gateway
from tests.helpers import BuiltRepo, sample


def predict(client: Any, records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    r = client.post("/predict", json={"records": records, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_feedback_outcomes(client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]) -> None:
    out = predict(client, feature_records[:3], request_id="fb-1")
    classes = gateway.repo.manifest.classes
    body = {
        "labels": [
            {"request_id": "fb-1", "row": 0, "label": classes[0]},
            {"request_id": "fb-1", "row": 1, "label": str(classes[1])},
            {"request_id": "fb-1", "row": 0, "label": classes[0]},
            {"request_id": "fb-1", "row": 0, "label": classes[1]},
            {"request_id": "nope", "row": 0, "label": classes[0]},
            {"request_id": "fb-1", "row": 2, "label": "not-a-class"},
            {"request_id": "fb-1", "row": -1, "label": classes[0]},
            {"request_id": "fb-1", "row": 2},
            7,
        ]
    }
    r = client.post("/feedback", json=body)
    assert r.status_code == 200, r.text
    counts = r.json()
    assert {k: counts[k] for k in metrics.FEEDBACK_OUTCOMES} == {
        "joined": 2,
        "unknown_id": 1,
        "duplicate": 1,
        "conflicting": 1,
        "invalid_label": 4,
    }
    assert counts["received"] == 9
    assert any("labels[5].label" in e for e in counts["errors"])
    # The first label stays: re-sending the first label is still a duplicate, not a conflict.
    again = client.post("/feedback", json={"request_id": "fb-1", "row": 0, "label": classes[0]}).json()
    assert again["duplicate"] == 1
    assert out["request_id"] == "fb-1"


def test_feedback_scores_every_model_once(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    served = predict(client, feature_records[:1], request_id="fb-score")
    assert gateway.recording.barrier(10)
    label = served["predictions"][0]["label"]
    before = {
        n: sample("gateway_feedback_total", model=n, outcome="correct")
        + sample("gateway_feedback_total", model=n, outcome="incorrect")
        for n in gateway.repo.variants
    }
    client.post("/feedback", json={"request_id": "fb-score", "row": 0, "label": label})
    client.post("/feedback", json={"request_id": "fb-score", "row": 0, "label": label})
    for name in gateway.repo.variants:
        after = sample("gateway_feedback_total", model=name, outcome="correct") + sample(
            "gateway_feedback_total", model=name, outcome="incorrect"
        )
        assert after - before[name] == 1, name  # shadow at 100%: every model predicted this row, once
    served_name = served["variant"]
    assert sample("gateway_feedback_total", model=served_name, outcome="correct") >= 1


def test_feedback_bad_bodies_are_4xx(client: Any) -> None:
    assert (
        client.post("/feedback", content=b"{", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert client.post("/feedback", json=[]).status_code == 400
    assert client.post("/feedback", json={"labels": [], "x": 1}).status_code == 400
    r = client.post("/feedback", json={"labels": [{"request_id": "x"}] * 10_001})
    assert r.status_code == 413


def test_oip_prediction_can_be_labelled_by_its_id(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    rec = next(r for r in feature_records if all(v is not None for v in r.values()))
    inputs = [
        {
            "name": c.name,
            "shape": [1],
            "datatype": "FP32" if c.kind == "numeric" else "BYTES",
            "data": [rec[c.name]],
        }
        for c in gateway.repo.manifest.inputs
    ]
    r = client.post(
        f"/v2/models/{gateway.repo.manifest.name}/infer", json={"id": "oip-label", "inputs": inputs}
    )
    label = r.json()["outputs"][0]["data"][0]
    counts = client.post("/feedback", json={"request_id": "oip-label", "row": 0, "label": label}).json()
    assert counts["joined"] == 1


def test_metrics_endpoint_and_rejections(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    before = sample("gateway_rejected_requests_total", reason="invalid_field")
    client.post("/predict", json={"records": [{}]})
    assert sample("gateway_rejected_requests_total", reason="invalid_field") == before + 1
    predict(client, feature_records[:2])
    text = client.get("/metrics").text
    for name in (
        "gateway_model_inference_seconds_bucket",
        "gateway_request_seconds_bucket",
        "gateway_predictions_total",
        "gateway_offline_score",
        "gateway_model_info",
        "gateway_label_delay_seconds_bucket",
        "gateway_disagreement_total",
    ):
        assert name in text, name
    assert 'le="1e-05"' in text, "buckets resolve tens of microseconds"
    assert "request_id" not in text


def test_compare_on_recorded_traffic(client: Any, gateway: Gateway, built_repo: BuiltRepo) -> None:
    frame = pd.read_csv(built_repo.csv)
    rows = frame.head(120)
    truth = rows["target"].tolist()
    records = rows.drop(columns=["target", "row_id"]).to_dict(orient="records")
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    for i in range(0, len(records), 40):
        predict(client, records[i : i + 40], request_id=f"cmp-{i}")
    assert gateway.recording.barrier(10)
    labels = [{"request_id": f"cmp-{i - i % 40}", "row": i % 40, "label": y} for i, y in enumerate(truth)]
    fb = client.post("/feedback", json={"labels": labels}).json()
    assert fb["joined"] == 120, fb
    doc = client.get("/compare").json()
    assert (doc["labelled_rows"], doc["served_rows"]) == (120, 120)
    assert doc["label_coverage"] == pytest.approx(1.0)
    by_model = {m["model"]: m for m in doc["models"]}
    assert set(by_model) == set(gateway.repo.variants)
    for m in by_model.values():
        assert m["n"] == 120 and m["low"] <= m["online"] <= m["high"]
        assert m["offline"] is not None
        c = m["calibration"]
        assert c["n"] == 120 and sum(b["n"] for b in c["bins"]) == 120 and c["of"] == "P(class 1)"
        assert c["brier_low"] <= c["brier"] <= c["brier_high"] and c["ece_low"] <= c["ece_high"]
        assert c["log_loss"] > 0 and c["offline_log_loss"] is not None
    scraped_text = client.get("/metrics").text
    for name in gateway.repo.variants:
        assert f'gateway_online_calibration{{metric="brier",model="{name}"}}' in scraped_text
    assert {t["challenger"] for t in doc["tests"]} == set(gateway.repo.variants) - {doc["champion"]}
    for t in doc["tests"]:
        assert t["n"] == 120 and t["verdict"]
    assert doc["summary"].startswith("Offline winner:")


def test_compare_reads_only_new_labels_and_matches_a_fresh_read(
    client: Any, gateway: Gateway, built_repo: BuiltRepo
) -> None:
    """Each /compare decodes only the labels received since the previous one; the document equals one
    computed from scratch over every labelled row."""
    from service.ledger import reads
    from service.ledger.database import Database
    from service.stats.compare import compare

    frame = pd.read_csv(built_repo.csv).head(150)
    truth = frame["target"].tolist()
    records = frame.drop(columns=["target", "row_id"]).to_dict(orient="records")
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    for i in range(0, len(records), 30):
        predict(client, records[i : i + 30], request_id=f"inc-{i}")
    labels = [{"request_id": f"inc-{i - i % 30}", "row": i % 30, "label": y} for i, y in enumerate(truth)]
    assert client.post("/feedback", json={"labels": labels[:50]}).json()["joined"] == 50
    first = client.get("/compare").json()
    assert first["labelled_rows"] == 50
    decoded: list[int] = []
    real = reads.decode_outputs
    try:
        reads.decode_outputs = lambda text: decoded.append(1) or real(text)  # type: ignore[assignment]
        assert client.post("/feedback", json={"labels": labels[50:]}).json()["joined"] == 100
        again = client.get("/compare").json()
        assert len(decoded) == 100, "only the 100 new labelled rows were read"
    finally:
        reads.decode_outputs = real  # type: ignore[assignment]
    conn = Database(gateway.settings.ledger_path)
    try:
        others = [n for n in gateway.repo.variants if n != gateway.router.champion]
        m = gateway.repo.manifest
        rows = reads.LabelledRows.for_version(None, m)
        fresh = compare(
            m,
            gateway.repo.cards,
            rows.update(conn),
            champion=gateway.router.champion,
            others=others,
            served_rows=reads.served_rows(conn, m.name, m.version),
            labelled_rows=rows.rows,
            calibration=rows.calibration(),
            unlabelled=reads.unlabelled_answers(conn, m.name, m.version, gateway.settings.estimate_max_rows)[
                1
            ],
        )
    finally:
        conn.close()
    assert again.pop("estimates")["unlabelled_rows"] == len(records) - 150
    assert again.pop("promotion")["enabled"] is False
    assert again == json.loads(json.dumps(fresh))
    assert again["labelled_rows"] == 150 and all(m["n"] == 150 for m in again["models"])


def test_a_label_waits_briefly_for_a_prediction_another_process_has_not_written_yet(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Another worker answered the request and writes its record a moment after the label arrives:
    the store keeps looking (GATEWAY_FEEDBACK_RETRY_S) instead of answering unknown_id."""
    import orjson

    from service.ledger.database import Database
    from service.ledger.feedback import FeedbackStore

    path = tmp_path / "shared.sqlite"
    store = FeedbackStore(
        gateway.settings.model_copy(update={"ledger_path": path, "feedback_retry_s": 2.0}), lambda: True
    )
    manifest = gateway.repo.manifest
    label = manifest.classes[0]

    def other_worker_writes() -> None:
        time.sleep(0.3)
        conn = Database(path)
        doc = orjson.dumps({gateway.router.champion: [0, 0.9, "s"]}).decode()
        conn.execute(
            "INSERT INTO predictions VALUES (?,?,?,?,?,?,?)",
            ("late-writer", 0, manifest.name, manifest.version, gateway.router.champion, time.time(), doc),
        )
        conn.close()

    writer = threading.Thread(target=other_worker_writes)
    writer.start()
    start = time.monotonic()
    counts = store.submit(manifest, {"request_id": "late-writer", "row": 0, "label": label}).as_json()
    writer.join()
    assert counts["joined"] == 1 and 0.25 < time.monotonic() - start < 1.5
    start = time.monotonic()
    counts = store.submit(manifest, {"request_id": "never-answered", "row": 0, "label": label}).as_json()
    assert counts["unknown_id"] == 1 and 1.9 < time.monotonic() - start < 3.5, "gives up after the window"
    store.close()
