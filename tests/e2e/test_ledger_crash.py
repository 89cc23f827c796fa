"""The ledger of a real `bentoml serve`: a graceful stop loses nothing, a kill -9 at most the last flush."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import BuiltRepo, ledger_count, scraped, start_server, stop_server, wait_until


def _send(url: str, records: list[dict[str, Any]], prefix: str, n: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(n):
            r = c.post("/predict", json={"records": records[:1], "request_id": f"{prefix}-{i}"})
            assert r.status_code == 200, r.text


@pytest.mark.slow
def test_graceful_stop_loses_nothing(
    built_repo: BuiltRepo, feature_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    server = start_server(
        built_repo.root,
        tmp_path / "s.log",
        ledger=ledger,
        extra_env={"GATEWAY_LEDGER_FLUSH_INTERVAL_S": "30"},
    )
    _send(server.url, feature_records, "graceful", 40)
    stop_server(server)  # SIGTERM: the interval is 30 s, so only the shutdown flush can have written them
    assert ledger_count(ledger) == 40


@pytest.mark.slow
def test_kill_9_loses_at_most_the_last_flush_interval(
    built_repo: BuiltRepo, feature_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    server = start_server(
        built_repo.root,
        tmp_path / "s.log",
        ledger=ledger,
        extra_env={"GATEWAY_LEDGER_FLUSH_INTERVAL_S": "0.5"},
    )
    _send(server.url, feature_records, "early", 50)
    # Committed within a few flush intervals (0.5 s each), whatever the machine's load.
    wait_until(
        lambda: ledger_count(ledger, "request_id LIKE 'early-%'") == 50, 10, "the early requests' commit"
    )
    _send(server.url, feature_records, "late", 20)
    server.managed.kill()  # the arbiter and its workers, by PID, at once
    early = ledger_count(ledger, "request_id LIKE 'early-%'")
    late = ledger_count(ledger, "request_id LIKE 'late-%'")
    print(f"kill -9: early requests recorded {early}/50, last-interval requests recorded {late}/20")
    assert early == 50
    # Everything that survived can still be joined after a restart; what did not is counted there:
    # the dead worker's crash journal shows the gap (answered = recorded + counted).
    server = start_server(built_repo.root, tmp_path / "s2.log", ledger=ledger)
    try:
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        crashed = scraped(metrics, 'gateway_unrecorded_rows_total{reason="worker_crashed"}')
        print(f"kill -9: answered 70, recorded {early + late}, counted worker_crashed {crashed:g} at restart")
        assert early + late + crashed == 70
        if crashed:
            assert "ledger gap: worker" in (tmp_path / "s2.log").read_text()
        labels = [{"request_id": f"early-{i}", "row": 0, "label": "stay"} for i in range(50)]
        r = httpx.post(f"{server.url}/feedback", json={"labels": labels}, timeout=30)
        assert r.json()["joined"] == 50
    finally:
        stop_server(server)
