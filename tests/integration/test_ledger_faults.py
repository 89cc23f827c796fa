"""Ledger faults through the gateway (threads and the evaluator process alike): a full disk, a
read-only label store, a ledger file deleted while serving. Under each: answered rows = ledger rows +
rows counted in gateway_unrecorded_rows_total, /health says what is wrong, and no label is
acknowledged as joined unless it is durable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from service import metrics
from service.core.gateway import Gateway
from service.http.app import build_app
from service.settings import Settings
from tests.helpers import ledger_count, remove_ledger, sample, wait_until


def unrecorded_total() -> float:
    return sum(sample("gateway_unrecorded_rows_total", reason=r) for r in metrics.UNRECORDED_REASONS)


@pytest.fixture(params=["threads", "process"])
def recording(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def serve(settings: Settings) -> tuple[Gateway, TestClient]:
    gateway = Gateway(settings)
    gateway.load()
    client = TestClient(build_app(gateway), base_url="http://gateway")
    client.__enter__()
    return gateway, client


@pytest.fixture
def full_disk(settings: Settings, recording: str) -> Iterator[tuple[Gateway, TestClient]]:
    gateway, client = serve(
        settings.model_copy(
            update={
                "evaluator_process": recording == "process",
                "ledger_max_bytes": 96 * 1024,
                "ledger_retry_rows": 100,
            }
        )
    )
    yield gateway, client
    client.__exit__(None, None, None)
    gateway.close()


def send(client: TestClient, records: list[dict[str, Any]], prefix: str, n: int, rows: int = 2) -> int:
    for i in range(n):
        r = client.post("/predict", json={"records": records[:rows], "request_id": f"{prefix}-{i}"})
        assert r.status_code == 200, r.text
    return n * rows


def test_full_disk_every_answered_row_is_recorded_or_counted(
    full_disk: tuple[Gateway, TestClient], feature_records: list[dict[str, Any]], recording: str
) -> None:
    gateway, client = full_disk
    before = unrecorded_total()
    answered = send(client, feature_records, "full", 300)
    wait_until(lambda: client.get("/health").json()["status"] == "degraded", 20, "/health to say degraded")
    health = client.get("/health").json()
    assert health["ledger"]["reason"] == "ledger_full", health
    # Rows kept for another try stay within the budget (the queue drains into it at the next try).
    wait_until(
        lambda: client.get("/health").json()["ledger"]["pending_rows"] <= 100, 20, "pending within budget"
    )
    assert sample("gateway_ledger_degraded") == 1
    path = gateway.settings.ledger_path

    def balance() -> tuple[int, float, int]:
        return (
            ledger_count(path),
            unrecorded_total() - before,
            client.get("/health").json()["ledger"]["pending_rows"],
        )

    # While degraded: recorded + counted + still being retried = answered.
    wait_until(lambda: sum(balance()) == answered, 20, f"recorded + counted + pending = {answered}")
    client.__exit__(None, None, None)
    gateway.close()  # the stop: what is still pending is counted, never dropped silently
    recorded, counted = ledger_count(path), unrecorded_total() - before
    print(f"[{recording}] full disk: answered {answered}, recorded {recorded}, counted {counted:g}")
    assert recorded + counted == answered
    assert counted > 0 and sample("gateway_unrecorded_rows_total", reason="ledger_full") > 0


def test_labels_are_refused_with_503_when_they_cannot_be_made_durable(
    client: TestClient, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    send(client, feature_records, "ro", 2, rows=1)
    assert gateway.recording.barrier()
    label = gateway.repo.manifest.classes[0]
    ok = client.post("/feedback", json={"request_id": "ro-0", "row": 0, "label": label})
    assert ok.json()["joined"] == 1
    store = gateway._feedback
    assert store is not None
    store._db.conn.execute("PRAGMA query_only=1")  # the label store turns read-only
    refused = client.post("/feedback", json={"request_id": "ro-1", "row": 0, "label": label})
    assert refused.status_code == 503, refused.text
    assert "ledger_read_only" in refused.json()["error"]
    assert sample("gateway_rejected_requests_total", reason="ledger_unavailable") >= 1
    store._db.conn.execute("PRAGMA query_only=0")
    again = client.post("/feedback", json={"request_id": "ro-1", "row": 0, "label": label})
    assert again.json()["joined"] == 1  # nothing of the refused request was recorded


def test_a_ledger_deleted_while_serving_is_recreated_and_old_ids_are_not_joined(
    settings: Settings, feature_records: list[dict[str, Any]], recording: str
) -> None:
    gateway, client = serve(settings.model_copy(update={"evaluator_process": recording == "process"}))
    try:
        path = gateway.settings.ledger_path
        send(client, feature_records, "before", 3, rows=1)
        assert gateway.recording.barrier()
        reopened = sample("gateway_ledger_reopened_total")
        remove_ledger(path)
        answered = send(client, feature_records, "after", 4, rows=1)
        assert gateway.recording.barrier()
        assert ledger_count(path) == answered  # the rows after the deletion are in the file now there
        label = gateway.repo.manifest.classes[0]
        labels = [{"request_id": f"after-{i}", "row": 0, "label": label} for i in range(4)]
        labels.append({"request_id": "before-0", "row": 0, "label": label})
        fb = client.post("/feedback", json={"labels": labels}).json()
        assert fb["joined"] == 4 and fb["unknown_id"] == 1  # labels go to the file that holds the rows
        client.get("/metrics")
        assert sample("gateway_ledger_reopened_total") == reopened + 1
        assert client.get("/health").json()["ledger"]["reopened"] == 1
        assert client.get("/compare").status_code == 200
    finally:
        client.__exit__(None, None, None)
        gateway.close()
