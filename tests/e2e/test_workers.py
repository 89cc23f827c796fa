"""Two workers: both answer, metrics aggregate across processes, labels join whichever worker
predicted, even when they arrive right after the answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.helpers import BuiltRepo, start_server, stop_server, wait_until

pytestmark = pytest.mark.slow


def value(text: str, sample: str) -> float:
    pattern = re.escape(sample) + r" ([0-9.e+-]+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_two_workers_count_every_request_once(
    built_repo: BuiltRepo, tmp_path: Path, feature_records: list[dict[str, Any]]
) -> None:
    server = start_server(
        built_repo.root,
        tmp_path / "s.log",
        workers=2,
        ledger=tmp_path / "ledger.sqlite",
        extra_env={"GATEWAY_LEDGER_FLUSH_INTERVAL_S": "0.05"},
    )
    try:
        for i in range(40):
            # A fresh connection each time, so both workers get traffic.
            r = httpx.post(
                f"{server.url}/predict",
                json={"records": feature_records[:1], "request_id": f"w-{i}"},
                headers={"connection": "close"},
                timeout=10,
            )
            assert r.status_code == 200
        # At once: a label may reach the worker that did not answer before the other worker has
        # written the prediction; the store looks again (GATEWAY_FEEDBACK_RETRY_S) before unknown_id.
        labels = [{"request_id": f"w-{i}", "row": 0, "label": "stay"} for i in range(40)]
        assert (
            httpx.post(f"{server.url}/feedback", json={"labels": labels}, timeout=30).json()["joined"] == 40
        )

        # Each worker applies its queued metric updates every metrics_flush_interval_s (and before its
        # own scrapes): the other worker's last updates can lag by that much.
        def scrape() -> str:
            return httpx.get(f"{server.url}/metrics", headers={"connection": "close"}, timeout=10).text

        wait_until(lambda: value(scrape(), "gateway_served_rows_total") == 40, 10, "40 rows counted")
        for _ in range(4):  # whichever worker answers the scrape, the totals are the same
            text = scrape()
            assert value(text, "gateway_served_rows_total") == 40
            assert value(text, 'gateway_labels_total{outcome="joined"}') == 40
            assert "gateway_model_info{" in text
        assert len(rows_served_by_worker(server.env["BENTOML_HOME"])) == 2, "both workers answered"
    finally:
        stop_server(server)


def rows_served_by_worker(bentoml_home: str) -> dict[int, float]:
    """gateway_served_rows_total per worker process, from each worker's own multiprocess file."""
    out: dict[int, float] = {}
    for path in (Path(bentoml_home) / "prometheus_multiproc_dir").glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == "gateway_served_rows_total" and sample.value > 0:
                    out[pid] = sample.value
    return out
