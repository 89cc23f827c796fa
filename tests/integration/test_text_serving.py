"""A text repository served unchanged: JSON and OIP (BYTES) rows with free text, every variant scoring
its card's offline test metrics, wrong types refused with the field, labels joined, /compare and
/drift (the text column drifts on its length)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.core.gateway import Gateway
from tests.helpers import TextRepo, in_process_gateway, to_records


@pytest.fixture
def text_client(text_repo: TextRepo, tmp_path: Path) -> Iterator[tuple[Any, Gateway]]:
    with in_process_gateway(text_repo.root, tmp_path / "ledger.sqlite", max_batch_rows=64) as served:
        yield served


@pytest.fixture(scope="module")
def test_split(text_repo: TextRepo) -> tuple[list[dict[str, Any]], list[str]]:
    from builders import data as data_mod
    from builders.build import split_table

    frame = pd.read_csv(text_repo.csv)
    table = data_mod.prepare(frame, "topic", "auto", "fortunes", str(text_repo.csv), "0" * 64)
    _, _, x_test, _, _, y_test = split_table(table, seed=0)
    records = to_records(frame.loc[x_test.index].drop(columns=["topic"]))
    return records, [table.classes[i] for i in y_test]


def test_every_variant_serves_its_offline_test_accuracy(
    text_client: tuple[Any, Gateway], test_split: tuple[list[dict[str, Any]], list[str]]
) -> None:
    client, gw = text_client
    records, truth = test_split
    assert any(r["text"] is None for r in records), "missing text is served too"
    for name, card in gw.repo.cards.items():
        r = client.post("/predict", json={"records": records, "variant": name})
        assert r.status_code == 200, r.text
        labels = [p["label"] for p in r.json()["predictions"]]
        online = float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))
        assert online == pytest.approx(card.metrics["test"]["accuracy"], abs=1e-6), name


def test_oip_bytes_text_answers_as_json(
    text_client: tuple[Any, Gateway], test_split: tuple[list[dict[str, Any]], list[str]]
) -> None:
    client, gw = text_client
    records = [{**r, "text": r["text"] or ""} for r in test_split[0][:5]]
    records[0]["text"] = "ÜBER-Café: a judge's LAWSUIT about pizza — 日本語"
    inputs = [
        {"name": "words", "shape": [5, 1], "datatype": "FP32", "data": [r["words"] for r in records]},
        {"name": "attributed", "shape": [5], "datatype": "BYTES", "data": [r["attributed"] for r in records]},
        {"name": "text", "shape": [5], "datatype": "BYTES", "data": [r["text"] for r in records]},
    ]
    r = client.post("/v2/models/fortunes/infer", json={"id": "t-1", "inputs": inputs})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    variant = r.json()["parameters"]["variant"]
    via_json = client.post("/predict", json={"records": records, "variant": variant}).json()["predictions"]
    assert outputs["label"]["data"] == [p["label"] for p in via_json]
    np.testing.assert_allclose(
        np.asarray(outputs["probabilities"]["data"]).reshape(5, -1),
        [[p["probabilities"][str(c)] for c in gw.repo.manifest.classes] for p in via_json],
        atol=1e-6,
    )


def test_wrong_types_in_a_text_column_are_400_and_not_recorded(
    text_client: tuple[Any, Gateway], test_split: tuple[list[dict[str, Any]], list[str]]
) -> None:
    client, gw = text_client
    record = dict(test_split[0][0])
    r = client.post("/predict", json={"records": [{**record, "text": 42}], "request_id": "bad-text"})
    assert r.status_code == 400 and "records[0].text" in r.text, r.text
    inputs = [
        {"name": "words", "shape": [1, 1], "datatype": "FP32", "data": [3.0]},
        {"name": "attributed", "shape": [1], "datatype": "BYTES", "data": ["no"]},
        {"name": "text", "shape": [1, 1], "datatype": "FP32", "data": [1.0]},
    ]
    r = client.post("/v2/models/fortunes/infer", json={"id": "bad-oip", "inputs": inputs})
    assert r.status_code == 400 and "BYTES (a text column)" in r.text, r.text
    assert gw.recording.barrier(10)
    fb = client.post("/feedback", json={"request_id": "bad-text", "row": 0, "label": "law"}).json()
    assert fb["unknown_id"] == 1


def test_labels_join_and_compare_covers_text_models(
    text_client: tuple[Any, Gateway], test_split: tuple[list[dict[str, Any]], list[str]]
) -> None:
    client, gw = text_client
    records, truth = test_split
    r = client.post("/predict", json={"records": records, "request_id": "txt-1"})
    assert r.status_code == 200, r.text
    assert gw.recording.barrier(10)
    labels = [{"request_id": "txt-1", "row": i, "label": y} for i, y in enumerate(truth)]
    fb = client.post("/feedback", json={"labels": labels}).json()
    assert fb["joined"] == len(truth), fb
    doc = client.get("/compare").json()
    assert doc["labelled_rows"] == len(truth)
    by_model = {m["model"]: m for m in doc["models"]}
    assert set(by_model) == set(gw.repo.variants)
    for m in by_model.values():
        assert m["n"] == len(truth) and m["low"] <= m["online"] <= m["high"]
    assert {t["challenger"] for t in doc["tests"]} == set(gw.repo.variants) - {doc["champion"]}


def test_longer_texts_drift_on_their_length(
    text_client: tuple[Any, Gateway], test_split: tuple[list[dict[str, Any]], list[str]]
) -> None:
    client, _ = text_client
    records = test_split[0]
    for _ in range(4):
        assert client.post("/predict", json={"records": records}).status_code == 200
    cols = {c["column"]: c for c in client.get("/drift").json()["columns"]}
    assert cols["text"]["kind"] == "text" and cols["text"]["test"] == "ks"
    assert cols["text"]["status"] != "drifted", cols["text"]
    longer = [{**r, "text": ((r["text"] or "") + " ") * 6} for r in records]
    for _ in range(8):
        assert client.post("/predict", json={"records": longer}).status_code == 200
    cols = {c["column"]: c for c in client.get("/drift").json()["columns"]}
    assert cols["text"]["status"] == "drifted" and cols["text"]["p_value"] < 1e-6, cols["text"]
