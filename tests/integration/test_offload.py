"""The evaluator process's own failures and limits: a crash is counted and it is restarted, a stop
ends it, a full queue sheds shadow work first, and a worker killed -9 leaves it to flush and exit.
(What it records, on threads and in the process alike: test_shadow_records.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.gateway import Gateway
from service.recording.process import ProcessRecording
from service.settings import Settings
from tests.helpers import ROOT, BuiltRepo, ledger_rows, sample, wait_until


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every test here is about the evaluator process."""
    return settings.model_copy(update={"evaluator_process": True})


def offloaded(gateway: Gateway) -> ProcessRecording:
    assert isinstance(gateway.recording, ProcessRecording), "the evaluator process is on"
    return gateway.recording


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_crashed_evaluator_loses_nothing_its_batches_go_to_the_next_one(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    """Jobs the evaluator received but never confirmed (it was stopped, then killed) are sent again to
    its successor: all are in the ledger once, nothing is counted lost."""
    executor = offloaded(gateway)
    old = executor.pid
    assert old is not None and alive(old)
    lost_before = sample("gateway_unrecorded_rows_total", reason="evaluator_lost")
    os.kill(old, signal.SIGSTOP)  # it receives the next jobs but never confirms them
    try:
        for i in range(5):
            r = client.post("/predict", json={"records": feature_records[:1], "request_id": f"lost-{i}"})
            assert r.status_code == 200
        wait_until(lambda: executor._inflight_jobs >= 5, 10, "5 jobs shipped, unconfirmed")
    finally:
        os.kill(old, signal.SIGKILL)
    for i in range(3):
        r = client.post("/predict", json={"records": feature_records[:2], "request_id": f"after-{i}"})
        assert r.status_code == 200
    assert executor.barrier(30), "a new evaluator process took over"
    assert executor.pid not in (None, old)
    rows = ledger_rows(gateway.settings.ledger_path)
    assert {k for k in rows if k[0].startswith("after-")} == {
        (f"after-{i}", r) for i in range(3) for r in range(2)
    }
    assert {k for k in rows if k[0].startswith("lost-")} == {(f"lost-{i}", 0) for i in range(5)}
    assert sample("gateway_unrecorded_rows_total", reason="evaluator_lost") == lost_before
    assert executor.rows.journal is not None and executor.rows.journal.owed == 0
    # Labels join again once the evaluator is back.
    label = gateway.repo.manifest.classes[0]
    fb = client.post("/feedback", json={"request_id": "lost-0", "row": 0, "label": label}).json()
    assert fb["joined"] == 1


def test_stopping_ends_the_evaluator(settings: Settings) -> None:
    gateway = Gateway(settings)
    gateway.load()
    pid = offloaded(gateway).pid
    assert pid is not None and alive(pid)
    gateway.close()
    assert not alive(pid)


@pytest.fixture
def narrow_gateway(settings: Settings) -> Iterator[Gateway]:
    """Room for one request with shadow work per shipment, shipped once a second."""
    gateway = Gateway(settings.model_copy(update={"shadow_queue": 1, "shadow_gather_s": 1.0}))
    gateway.load()
    yield gateway
    gateway.close()


def test_a_full_queue_sheds_shadow_work_first(
    narrow_gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    before = sample("gateway_dropped_work_total", reason="shadow_queue_full")
    for i in range(20):
        narrow_gateway.predict_json({"records": feature_records[:1], "request_id": f"full-{i}"}, None)
    assert offloaded(narrow_gateway).barrier()
    shed = sample("gateway_dropped_work_total", reason="shadow_queue_full") - before
    assert shed >= 17  # the sender wakes once a second: at most a couple of wake-ups in between
    rows = ledger_rows(narrow_gateway.settings.ledger_path)
    assert len(rows) == 20, "every answer is recorded, with or without its shadow work"
    with_shadow = sum(any(role == "shadow" for _, _, role in doc.values()) for doc in rows.values())
    assert with_shadow == 20 - shed


WORKER = """
import os, signal, sys, time
from pathlib import Path
from service.core.gateway import Gateway
from service.settings import Settings
gw = Gateway(Settings(repository=Path(sys.argv[1]), ledger_path=Path(sys.argv[2]), ledger_flush_interval_s=5))
gw.load()
record = {c.name: (1.0 if c.kind == "numeric" else "x") for c in gw.repo.manifest.inputs}
for i in range(50):
    gw.predict_json({"records": [record], "request_id": f"orphan-{i}"}, None)
while gw.recording._inflight_jobs < 50:
    time.sleep(0.01)
print(gw.recording.pid, flush=True)
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
        wait_until(lambda: not alive(pid), 20, "the orphaned evaluator to stop")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    rows = ledger_rows(ledger)
    assert {k[0] for k in rows} == {f"orphan-{i}" for i in range(50)}
