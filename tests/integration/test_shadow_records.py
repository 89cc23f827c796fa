"""What shadow work records, on threads of the worker and in the evaluator process alike: shadow
variants equal offline evaluation in the ledger, their counts reach this worker's metrics, and an
answered request is recorded even when its shadow work is late, fails, or the gateway stops right
after answering. (The evaluator process's own failures: test_offload.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from service.core.gateway import Gateway
from service.settings import Settings
from tests.helpers import HeldOut, ledger_rows, sample


@pytest.fixture(params=[False, True], ids=["threads", "process"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return settings.model_copy(update={"evaluator_process": request.param})


def committed(gateway: Gateway) -> None:
    """Everything answered so far is in the ledger."""
    assert gateway.recording.barrier()


def only_served(gateway: Gateway, rows: dict[tuple[str, int], dict[str, Any]]) -> bool:
    """No shadow output recorded: the served answer and the members that produced it."""
    members = set(gateway.repo.members_for([gateway.router.champion])) | {gateway.router.champion}
    return all(set(doc) <= members for doc in rows.values())


@pytest.fixture
def late_gateway(settings: Settings) -> Iterator[Gateway]:
    """Every request's shadow work is past its deadline by the time it is taken."""
    gateway = Gateway(settings.model_copy(update={"shadow_timeout_s": 1e-6}))
    gateway.load()
    yield gateway
    gateway.close()


def test_shadow_records_equal_offline_evaluation(client: Any, gateway: Gateway, held_out: HeldOut) -> None:
    """Every variant scored in shadow is recorded with exactly its card's test accuracy."""
    records = held_out.records
    for start in range(0, len(records), 7):  # many small requests: they share batched member runs
        r = client.post("/predict", json={"records": records[start : start + 7], "request_id": f"sh-{start}"})
        assert r.status_code == 200, r.text
    committed(gateway)
    rows = ledger_rows(gateway.settings.ledger_path)
    assert len(rows) == len(records)
    for name, card in gateway.repo.cards.items():
        labels = np.array([rows[(f"sh-{i - i % 7}", i % 7)][name][0] for i in range(len(records))])
        accuracy = float(np.mean(labels == held_out.classes))
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
    committed(gateway)
    rows = [
        doc for (rid, _), doc in ledger_rows(gateway.settings.ledger_path).items() if rid.startswith("cnt-")
    ]
    differ = sum(doc[member][0] != doc[champion][0] for doc in rows)
    assert len(rows) == 30
    assert sample("gateway_disagreement_total", model=member) - before["disagreed"] == differ
    assert sample("gateway_predictions_total", model=member, role="shadow") - before["shadow"] == 30
    assert sample("gateway_compared_rows_total", model=member) - before["compared"] == 30
    assert sample("gateway_model_inference_seconds_count", model=member) > before["runs"]


def test_late_shadow_work_is_dropped_but_the_answer_recorded(
    late_gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    before = sample("gateway_dropped_work_total", reason="shadow_timeout")
    for i in range(6):
        late_gateway.predict_json({"records": feature_records[:1], "request_id": f"late-{i}"}, None)
    committed(late_gateway)
    assert sample("gateway_dropped_work_total", reason="shadow_timeout") - before == 6
    rows = ledger_rows(late_gateway.settings.ledger_path)
    assert len(rows) == 6 and only_served(late_gateway, rows)


@pytest.mark.parametrize("settings", [False], ids=["threads"], indirect=True)
def test_a_failing_shadow_batch_still_records_the_answers(
    gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    """(On threads: a session of this process can be broken from here.)"""
    champion = gateway.router.champion
    needed = gateway.repo.members_for([champion])
    broken = next(m.name for m in gateway.repo.manifest.members if m.name not in needed)

    class Broken:
        def run(self, *_args: Any) -> Any:
            raise RuntimeError("a shadow member that cannot run")

    gateway.repo.sessions[broken] = Broken()  # type: ignore[assignment]
    before = sample("gateway_dropped_work_total", reason="shadow_failed")
    for i in range(4):
        out, _ = gateway.predict_json({"records": feature_records[:2], "request_id": f"broken-{i}"}, None)
        assert len(out["predictions"]) == 2, "answers do not depend on shadow members"
    committed(gateway)
    assert sample("gateway_dropped_work_total", reason="shadow_failed") - before == 4
    rows = ledger_rows(gateway.settings.ledger_path)
    expected = {(f"broken-{i}", r) for i in range(4) for r in range(2)}
    assert {k for k in rows if k[0].startswith("broken-")} == expected
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
