"""The evaluator process (the default): what it records equals offline evaluation, its counts reach
this worker's metrics, and no answered request is lost silently when it crashes, lags or stops."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service import metrics
from service.gateway import Gateway
from service.ledger import decode_outputs
from service.offload import OffloadExecutor
from service.settings import Settings
from tests.service.conftest import ROOT, BuiltRepo, to_records


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


def offloaded(gateway: Gateway) -> OffloadExecutor:
    assert isinstance(gateway.shadow, OffloadExecutor), "the evaluator process is the default"
    return gateway.shadow


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_until(check: Any, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def test_shadow_records_equal_offline_evaluation(
    client: Any, gateway: Gateway, built_repo: BuiltRepo
) -> None:
    """Every variant the evaluator process scored in shadow has exactly its card's test accuracy."""
    from builders import data as data_mod
    from builders.build import split_table

    frame = pd.read_csv(built_repo.csv)
    table = data_mod.prepare(frame, "target", "auto", "churn", str(built_repo.csv), "0" * 64)
    _, _, x_test, _, _, y_test = split_table(table, seed=0)
    records = to_records(x_test.rename(columns={c.tensor: c.name for c in table.columns}))
    for start in range(0, len(records), 7):  # many small requests: they share batched member runs
        r = client.post(
            "/predict", json={"records": records[start : start + 7], "request_id": f"off-{start}"}
        )
        assert r.status_code == 200, r.text
    assert offloaded(gateway).barrier()
    rows = ledger_rows(gateway.settings.ledger_path)
    assert len(rows) == len(records)
    for name, card in gateway.repo.cards.items():
        labels = np.array([rows[(f"off-{i - i % 7}", i % 7)][name][0] for i in range(len(records))])
        assert float(np.mean(labels == y_test)) == pytest.approx(
            card.metrics["test"]["accuracy"], abs=1e-6
        ), name
    roles = {role for doc in rows.values() for _, _, role in doc.values()}
    assert roles == {"served", "shadow"}


def test_counts_come_back_to_this_workers_metrics(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    champion = gateway.router.champion
    shadow_member = next(m.name for m in gateway.repo.manifest.members if m.name != champion)
    before = {
        "shadow": sample("gateway_predictions_total", model=shadow_member, role="shadow"),
        "compared": sample("gateway_compared_rows_total", model=shadow_member),
        "runs": sample("gateway_model_inference_seconds_count", model=shadow_member),
        "disagreed": sample("gateway_disagreement_total", model=shadow_member),
    }
    for i in range(10):
        body = {"records": feature_records[i * 3 : i * 3 + 3], "request_id": f"cnt-{i}"}
        assert client.post("/predict", json=body).status_code == 200
    assert offloaded(gateway).barrier()
    if gateway.ledger is not None:
        assert gateway.ledger.flush()
    rows = [
        doc for (rid, _), doc in ledger_rows(gateway.settings.ledger_path).items() if rid.startswith("cnt-")
    ]
    differ = sum(doc[shadow_member][0] != doc[champion][0] for doc in rows)
    assert len(rows) == 30
    assert sample("gateway_disagreement_total", model=shadow_member) - before["disagreed"] == differ
    assert sample("gateway_predictions_total", model=shadow_member, role="shadow") - before["shadow"] == 30
    assert sample("gateway_compared_rows_total", model=shadow_member) - before["compared"] == 30
    assert sample("gateway_model_inference_seconds_count", model=shadow_member) > before["runs"]


def test_a_crashed_evaluator_is_counted_and_restarted(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    executor = offloaded(gateway)
    old = executor.pid
    assert old is not None and alive(old)
    lost_before = sample("gateway_dropped_work_total", reason="evaluator_lost")
    os.kill(old, signal.SIGSTOP)  # it receives the next jobs but never confirms them
    try:
        for i in range(5):
            assert (
                client.post(
                    "/predict", json={"records": feature_records[:1], "request_id": f"lost-{i}"}
                ).status_code
                == 200
            )
        child = executor._child
        assert child is not None and wait_until(lambda: child.sent >= 5)
    finally:
        os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: executor.pid != old) or executor.pid is None
    assert wait_until(
        lambda: sample("gateway_dropped_work_total", reason="evaluator_lost") - lost_before == 5
    )
    for i in range(3):
        r = client.post("/predict", json={"records": feature_records[:2], "request_id": f"after-{i}"})
        assert r.status_code == 200
    assert executor.barrier(30), "a new evaluator process took over"
    assert executor.pid not in (None, old)
    rows = ledger_rows(gateway.settings.ledger_path)
    assert {k for k in rows if k[0].startswith("after-")} == {
        (f"after-{i}", r) for i in range(3) for r in range(2)
    }
    assert not any(k[0].startswith("lost-") for k in rows)
    # Labels join again once the evaluator is back.
    label = gateway.repo.manifest.classes[0]
    fb = client.post("/feedback", json={"request_id": "after-0", "row": 1, "label": label}).json()
    assert fb["joined"] == 1


def test_stopping_records_everything_answered(
    settings: Settings, feature_records: list[dict[str, Any]]
) -> None:
    gateway = Gateway(settings)
    gateway.load()
    pid = offloaded(gateway).pid
    for i in range(200):
        gateway.predict_json(
            {"records": feature_records[i % 50 : i % 50 + 1], "request_id": f"stop-{i}"}, None
        )
    gateway.close()  # no barrier first: the stop itself must ship and record what is queued
    assert pid is not None and not alive(pid)
    assert len(ledger_rows(settings.ledger_path)) == 200


def test_late_shadow_work_is_dropped_but_the_answer_recorded(
    settings: Settings, feature_records: list[dict[str, Any]]
) -> None:
    gateway = Gateway(settings.model_copy(update={"shadow_timeout_s": 1e-6}))
    gateway.load()
    try:
        before = sample("gateway_dropped_work_total", reason="shadow_timeout")
        for i in range(6):
            gateway.predict_json({"records": feature_records[:1], "request_id": f"late-{i}"}, None)
        assert offloaded(gateway).barrier()
        assert sample("gateway_dropped_work_total", reason="shadow_timeout") - before == 6
        rows = ledger_rows(settings.ledger_path)
        assert len(rows) == 6
        served_members = set(gateway.repo.members_for([gateway.router.champion]))
        for doc in rows.values():
            assert {n for n, (_, _, role) in doc.items() if role != "served"} <= served_members
    finally:
        gateway.close()


def test_a_full_queue_sheds_shadow_work_first(
    settings: Settings, feature_records: list[dict[str, Any]]
) -> None:
    gateway = Gateway(settings.model_copy(update={"shadow_queue": 1, "shadow_gather_s": 1.0}))
    gateway.load()
    try:
        before = sample("gateway_dropped_work_total", reason="shadow_queue_full")
        for i in range(20):
            gateway.predict_json({"records": feature_records[:1], "request_id": f"full-{i}"}, None)
        assert offloaded(gateway).barrier()
        shed = sample("gateway_dropped_work_total", reason="shadow_queue_full") - before
        assert shed >= 17  # the sender wakes once a second: at most a couple of wake-ups in between
        rows = ledger_rows(settings.ledger_path)
        assert len(rows) == 20, "every answer is recorded, with or without its shadow work"
        with_shadow = sum(any(role == "shadow" for _, _, role in doc.values()) for doc in rows.values())
        assert with_shadow == 20 - shed
    finally:
        gateway.close()


WORKER = """
import os, signal, sys, time
from pathlib import Path
from service.gateway import Gateway
from service.settings import Settings
gw = Gateway(Settings(repository=Path(sys.argv[1]), ledger_path=Path(sys.argv[2]), ledger_flush_interval_s=5))
gw.load()
record = {c.name: (1.0 if c.kind == "numeric" else "x") for c in gw.repo.manifest.inputs}
for i in range(50):
    gw.predict_json({"records": [record], "request_id": f"orphan-{i}"}, None)
child = gw.shadow._child
while child.sent < 50:
    time.sleep(0.01)
print(gw.shadow.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_evaluator_flushes_and_exits_when_its_worker_dies(built_repo: BuiltRepo, tmp_path: Path) -> None:
    """A worker killed with -9: its evaluator sees end-of-file, commits what it was sent, and exits
    (with a 5 s flush interval, nothing would be committed yet without that)."""
    ledger = tmp_path / "ledger.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(built_repo.root), str(ledger)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid = int(proc.stdout.split()[0])
    try:
        assert wait_until(lambda: not alive(pid), 20), "the orphaned evaluator stopped"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    rows = ledger_rows(ledger)
    assert {k[0] for k in rows} == {f"orphan-{i}" for i in range(50)}
