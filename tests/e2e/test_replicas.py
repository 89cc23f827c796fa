"""Three real `bentoml serve` replicas on one PostgreSQL ledger (a throw-away cluster): `gateway
replay` spreads requests over them and posts each label to a replica other than the one that
answered; every label joins, /compare answers the same from each replica; a replica killed -9
mid-traffic leaves the others serving, and every row it had committed still joins."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import psycopg
import pytest

from cli.replay.client import run
from cli.replay.command import make_plan
from cli.replay.traffic import fetch_schema
from tests.helpers import BuiltRepo, Server, serve_refusal, start_server, stop_server, wait_until
from tests.postgres import PostgresCluster

pytestmark = pytest.mark.slow


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.fixture
def three(built_repo: BuiltRepo, pg_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    try:
        for i in range(3):
            folder = tmp_path / f"replica-{i}"
            folder.mkdir()
            servers.append(
                start_server(
                    built_repo.root,
                    folder / "bentoml.log",
                    ledger=folder / "ledger.sqlite",  # local files only (journal, BentoML home)
                    extra_env={"GATEWAY_LEDGER_URL": pg_url, "GATEWAY_LEDGER_FLUSH_INTERVAL_S": "0.05"},
                )
            )
        yield servers
    finally:
        for s in servers:
            stop_server(s)


def test_replay_over_three_replicas_joins_every_label_and_compare_agrees(
    three: list[Server], built_repo: BuiltRepo, pg_url: str
) -> None:
    table = pd.read_csv(built_repo.csv)
    schema = fetch_schema(three[0].url)
    plan = make_plan(
        table,
        schema,
        "target",
        rows=150,
        routing_key=None,
        drift_spec=None,
        drift_after=0.5,
        jitter=0.0,
        seed=1,
    )
    stats = asyncio.run(
        run(
            [s.url for s in three],
            plan,
            schema,
            rps=150,
            duration=None,
            label_delay=0.3,
            label_fraction=1.0,
            oip=False,
        )
    )
    assert stats.answered == 150 and not stats.errors, stats
    assert stats.labels_posted == stats.labels_joined == 150, stats
    assert _count(pg_url, "SELECT COUNT(*) FROM predictions") == 150
    assert _count(pg_url, "SELECT COUNT(*) FROM labels") == 150
    docs = [httpx.get(f"{s.url}/compare", timeout=30).json() for s in three]
    for doc in docs:
        assert (doc["labelled_rows"], doc["served_rows"]) == (150, 150), doc
    per_model = [{m["model"]: (m["n"], m["online"], m["low"], m["high"]) for m in d["models"]} for d in docs]
    assert per_model[0] == per_model[1] == per_model[2]
    # each replica answered a third: label counters on each replica sum to every label
    joined = 0.0
    for s in three:
        for line in httpx.get(f"{s.url}/metrics").text.splitlines():
            if line.startswith('gateway_labels_total{outcome="joined"}'):
                joined += float(line.split()[-1])
    assert joined == 150


def _kill(server: Server) -> None:
    """kill -9 of a replica: its supervisor and every worker and evaluator under it."""
    procs = [server.process.pid, *(p.pid for p in server.managed.descendants())]
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(p) for p in procs if psutil.pid_exists(p)], timeout=10)


def test_a_replica_killed_mid_traffic_leaves_the_others_serving_and_its_rows_joining(
    three: list[Server], feature_records: list[dict[str, Any]], built_repo: BuiltRepo, pg_url: str
) -> None:
    clients = [httpx.Client(base_url=s.url, timeout=10) for s in three]
    answered: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for i in range(90):
        k = i % 3
        r = clients[k].post(
            "/predict", json={"records": feature_records[i % 20 : i % 20 + 1], "request_id": f"kill-{i}"}
        )
        assert r.status_code == 200
        answered[k].append(f"kill-{i}")
    dead = "', '".join(answered[0])
    wait_until(
        lambda: _count(pg_url, f"SELECT COUNT(*) FROM predictions WHERE request_id IN ('{dead}')") == 30,
        10,
        "replica 0's rows committed",
    )
    _kill(three[0])
    with pytest.raises(httpx.TransportError):
        clients[0].get("/health", timeout=2)
    for i in range(90, 120):  # the others keep serving
        assert (
            clients[1 + i % 2]
            .post("/predict", json={"records": feature_records[:1], "request_id": f"kill-{i}"})
            .status_code
            == 200
        )
    labels = [{"request_id": f"kill-{i}", "label": "stay"} for i in range(120)]
    out = clients[1].post("/feedback", json={"labels": labels}).json()
    assert out["joined"] == 120 and out["unknown_id"] == 0, out
    doc = clients[2].get("/compare").json()
    assert doc["labelled_rows"] == 120
    for c in clients:
        c.close()


def test_serve_names_a_postgresql_it_cannot_reach_in_one_line(built_repo: BuiltRepo) -> None:
    url = "postgresql://gateway:secret@127.0.0.1:1/ledger"
    line = serve_refusal(built_repo.root, "--port", "0", "--ledger-url", url)
    assert line.startswith("gateway serve: error: --ledger-url: cannot open"), line
    assert "secret" not in line and "***" in line


def test_postgresql_restarted_under_a_serving_gateway_loses_nothing(
    built_repo: BuiltRepo, feature_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    cluster = PostgresCluster(tmp_path / "pg")
    server = None
    try:
        url = cluster.create_database("ledger")
        server = start_server(
            built_repo.root,
            tmp_path / "bentoml.log",
            ledger=tmp_path / "local.sqlite",
            extra_env={"GATEWAY_LEDGER_URL": url, "GATEWAY_LEDGER_FLUSH_INTERVAL_S": "0.05"},
        )
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for i in range(50):
                assert (
                    c.post(
                        "/predict", json={"records": feature_records[:1], "request_id": f"up-{i}"}
                    ).status_code
                    == 200
                )
            wait_until(
                lambda: _count(url, "SELECT COUNT(*) FROM predictions") == 50, 10, "rows before the stop"
            )
            cluster.stop()
            for i in range(50):  # answers go on while the database is down
                assert (
                    c.post(
                        "/predict", json={"records": feature_records[:1], "request_id": f"down-{i}"}
                    ).status_code
                    == 200
                )
            wait_until(lambda: c.get("/health").json()["status"] == "degraded", 10, "/health to say degraded")
            assert c.get("/health").json()["ledger"]["reason"] == "ledger_unreachable"
            refused = c.post("/feedback", json={"request_id": "up-0", "label": "stay"})
            assert refused.status_code == 503 and "send them again" in refused.json()["error"]
            assert c.get("/compare").status_code == 503
            cluster.start()
            wait_until(
                lambda: c.get("/health").json()["status"] == "ok", 30, "the ledger to recover by itself"
            )
            wait_until(
                lambda: _count(url, "SELECT COUNT(*) FROM predictions") == 100, 10, "rows written late"
            )
            assert c.post("/feedback", json={"request_id": "down-0", "label": "stay"}).json()["joined"] == 1
            text = c.get("/metrics").text
            unrecorded = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("gateway_unrecorded_rows_total{")
            )
            assert unrecorded == 0, "answered 100 = recorded 100 + counted 0"
    finally:
        if server is not None:
            stop_server(server)
        cluster.stop()
