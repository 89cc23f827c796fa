"""Shadow work on a thread of the worker (``evaluator_process=False``; the evaluator process has the
same checks in test_offload.py): shadow variants equal offline evaluation in the ledger, its counts
reach the metrics, and an answered request is recorded even when its shadow work is late, fails, or
the gateway stops right after answering."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service import metrics
from service.gateway import Gateway
from service.ledger import decode_outputs
from service.settings import Settings
from tests.service.conftest import BuiltRepo, to_records


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"evaluator_process": False})


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings)
    gw.load()
    yield gw
    gw.close()


def sample(name: str, **labels: str) -> float:
    metrics.flush()
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def ledger_rows(path: Path) -> dict[tuple[str, int], dict[str, tuple[int | None, float, str]]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT request_id, row_index, outputs FROM predictions").fetchall()
    finally:
        conn.close()
    return {(rid, i): decode_outputs(doc) for rid, i, doc in rows}


def test_shadow_records_equal_offline_evaluation(
    client: Any, gateway: Gateway, built_repo: BuiltRepo
) -> None:
    """Every variant scored in shadow is recorded with exactly its card's test accuracy."""
    from builders import data as data_mod
    from builders.build import split_table

    frame = pd.read_csv(built_repo.csv)
    table = data_mod.prepare(frame, "target", "auto", "churn", str(built_repo.csv), "0" * 64)
    _, _, x_test, _, _, y_test = split_table(table, seed=0)
    records = to_records(x_test.rename(columns={c.tensor: c.name for c in table.columns}))
    for start in range(0, len(records), 7):  # many small requests: they share batched member runs
        r = client.post("/predict", json={"records": records[start : start + 7], "request_id": f"sh-{start}"})
        assert r.status_code == 200, r.text
    assert gateway.shadow.barrier()
    assert gateway.ledger is not None and gateway.ledger.flush()
    rows = ledger_rows(gateway.settings.ledger_path)
    assert len(rows) == len(records)
    for name, card in gateway.repo.cards.items():
        labels = np.array([rows[(f"sh-{i - i % 7}", i % 7)][name][0] for i in range(len(records))])
        accuracy = float(np.mean(labels == y_test))
        assert accuracy == pytest.approx(card.metrics["test"]["accuracy"], abs=1e-6), name
    assert {role for doc in rows.values() for _, _, role in doc.values()} == {"served", "shadow"}


def test_shadow_counts_reach_the_metrics(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    champion = gateway.router.champion
    member = next(m.name for m in gateway.repo.manifest.members if m.name != champion)
    before = {
        "shadow": sample("gateway_predictions_total", model=member, role="shadow"),
        "compared": sample("gateway_compared_rows_total", model=member),
        "runs": sample("gateway_model_inference_seconds_count", model=member),
        "disagreed": sample("gateway_disagreement_total", model=member),
    }
    for i in range(10):
        body = {"records": feature_records[i * 3 : i * 3 + 3], "request_id": f"cnt-{i}"}
        assert client.post("/predict", json=body).status_code == 200
    assert gateway.shadow.barrier()
    if gateway.ledger is not None:
        assert gateway.ledger.flush()
    rows = [
        doc for (rid, _), doc in ledger_rows(gateway.settings.ledger_path).items() if rid.startswith("cnt-")
    ]
    differ = sum(doc[member][0] != doc[champion][0] for doc in rows)
    assert len(rows) == 30
    assert sample("gateway_disagreement_total", model=member) - before["disagreed"] == differ
    assert sample("gateway_predictions_total", model=member, role="shadow") - before["shadow"] == 30
    assert sample("gateway_compared_rows_total", model=member) - before["compared"] == 30
    assert sample("gateway_model_inference_seconds_count", model=member) > before["runs"]


def only_served(gateway: Gateway, rows: dict[tuple[str, int], dict[str, Any]]) -> bool:
    """No shadow output recorded: the served answer and the members that produced it."""
    members = set(gateway.repo.members_for([gateway.router.champion])) | {gateway.router.champion}
    return all({n for n in doc} <= members for doc in rows.values())


def test_late_shadow_work_is_dropped_but_the_answer_recorded(
    settings: Settings, feature_records: list[dict[str, Any]]
) -> None:
    gateway = Gateway(settings.model_copy(update={"shadow_timeout_s": 1e-6}))
    gateway.load()
    try:
        before = sample("gateway_dropped_work_total", reason="shadow_timeout")
        for i in range(6):
            gateway.predict_json({"records": feature_records[:1], "request_id": f"late-{i}"}, None)
        assert gateway.shadow.barrier()
        assert gateway.ledger is not None and gateway.ledger.flush()
        assert sample("gateway_dropped_work_total", reason="shadow_timeout") - before == 6
        rows = ledger_rows(settings.ledger_path)
        assert len(rows) == 6 and only_served(gateway, rows)
    finally:
        gateway.close()


def test_a_failing_shadow_batch_still_records_the_answers(
    gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    champion = gateway.router.champion
    broken = next(
        m.name for m in gateway.repo.manifest.members if m.name not in gateway.repo.members_for([champion])
    )

    class Broken:
        def run(self, *_args: Any) -> Any:
            raise RuntimeError("a shadow member that cannot run")

    gateway.repo.sessions[broken] = Broken()  # type: ignore[assignment]
    before = sample("gateway_dropped_work_total", reason="shadow_failed")
    for i in range(4):
        out, _ = gateway.predict_json({"records": feature_records[:2], "request_id": f"broken-{i}"}, None)
        assert len(out["predictions"]) == 2, "answers do not depend on shadow members"
    assert gateway.shadow.barrier()
    assert gateway.ledger is not None and gateway.ledger.flush()
    assert sample("gateway_dropped_work_total", reason="shadow_failed") - before == 4
    rows = ledger_rows(gateway.settings.ledger_path)
    assert {k for k in rows if k[0].startswith("broken-")} == {
        (f"broken-{i}", r) for i in range(4) for r in range(2)
    }
    assert only_served(gateway, rows)


def test_stopping_records_everything_answered(
    settings: Settings, feature_records: list[dict[str, Any]]
) -> None:
    gateway = Gateway(settings)
    gateway.load()
    for i in range(200):
        gateway.predict_json(
            {"records": feature_records[i % 50 : i % 50 + 1], "request_id": f"stop-{i}"}, None
        )
    gateway.close()  # no barrier first: the stop itself must finish and record what is queued
    assert len(ledger_rows(settings.ledger_path)) == 200
