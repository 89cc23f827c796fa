"""The ledger on a real PostgreSQL server (a throw-away cluster, tests/postgres.py), shared by several
gateways as replicas would share it: labels join whichever replica answered, /compare agrees
everywhere, races between replicas are counted once, retention runs once, and a restarted or
unreachable server loses nothing silently (answered rows = ledger rows + counted drops)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from starlette.testclient import TestClient

from service.core.gateway import Gateway
from service.http.app import build_app
from service.ledger.database import Database, failure_reason
from service.ledger.reads import LabelledRows
from service.ledger.schema import SCHEMA_VERSION, LedgerSchemaError
from service.settings import Settings
from tests.helpers import BuiltRepo, wait_until
from tests.postgres import PostgresCluster
from tests.unit.service.test_ledger import entry
from tests.unit.service.test_ledger_faults import Outcomes, writer


def _count(url: str, table: str = "predictions", where: str = "TRUE") -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0])


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[PostgresCluster]:
    """A cluster of this test's own, for the tests that stop or kill the server."""
    cluster = PostgresCluster(tmp_path / "pg")
    yield cluster
    cluster.stop()


@pytest.fixture
def replicas(settings: Settings, pg_url: str, tmp_path: Path) -> Iterator[list[TestClient]]:
    """Three gateways (as three replicas) on one PostgreSQL ledger, each with its own local files."""
    gateways, clients = [], []
    for i in range(3):
        s = settings.model_copy(
            update={"ledger_url": pg_url, "ledger_path": tmp_path / f"r{i}" / "unused.sqlite"}
        )
        gw = Gateway(s)
        gw.load()
        gateways.append(gw)
        clients.append(TestClient(build_app(gw), base_url=f"http://replica-{i}").__enter__())
    yield clients
    for c, gw in zip(clients, gateways, strict=True):
        c.__exit__(None, None, None)
        gw.close()


def test_labels_join_on_any_replica_and_compare_agrees_everywhere(
    replicas: list[TestClient], built_repo: BuiltRepo, pg_url: str
) -> None:
    frame = pd.read_csv(built_repo.csv).head(90)
    records = frame.drop(columns=["target", "row_id"]).to_dict(orient="records")
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    for i, rec in enumerate(records):  # replicas take turns answering
        r = replicas[i % 3].post("/predict", json={"records": [rec], "request_id": f"pg-{i}"})
        assert r.status_code == 200, r.text
    # each label goes to a replica other than the one that answered
    joined = 0
    for i, y in enumerate(frame["target"].tolist()):
        fb = replicas[(i + 1) % 3].post("/feedback", json={"request_id": f"pg-{i}", "label": y}).json()
        joined += fb["joined"]
        assert fb["unknown_id"] == 0, fb
    assert joined == 90 and _count(pg_url, "labels") == 90
    again = replicas[2].post("/feedback", json={"request_id": "pg-0", "label": frame["target"][0]}).json()
    assert again["duplicate"] == 1
    docs = [c.get("/compare").json() for c in replicas]
    for doc in docs:
        assert (doc["labelled_rows"], doc["served_rows"]) == (90, 90)
    keyed = [{m["model"]: (m["n"], m["online"]) for m in doc["models"]} for doc in docs]
    assert keyed[0] == keyed[1] == keyed[2]
    assert docs[0]["tests"] == docs[1]["tests"] == docs[2]["tests"]


def test_the_same_label_posted_to_two_replicas_at_once_joins_once(
    replicas: list[TestClient], feature_records: list[dict[str, Any]], pg_url: str
) -> None:
    for i in range(40):
        assert (
            replicas[0]
            .post("/predict", json={"records": feature_records[:1], "request_id": f"race-{i}"})
            .status_code
            == 200
        )
    replicas[0].get("/compare")  # the barrier: every prediction committed
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def post(client: TestClient, label: Any) -> None:
        body = {"labels": [{"request_id": f"race-{i}", "label": label} for i in range(40)]}
        out = client.post("/feedback", json=body).json()
        with lock:
            results.append(out)

    threads = [threading.Thread(target=post, args=(replicas[k], "stay")) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["joined"] for r in results) == 40, results
    assert sum(r["duplicate"] for r in results) == 40, results
    assert _count(pg_url, "labels") == 40


def test_a_label_committed_late_with_a_lower_sequence_is_still_read(pg_url: str) -> None:
    """Two replicas' transactions commit out of sequence order; /compare's incremental read must not
    skip the one that committed second."""
    ledger = Database(pg_url)
    with ledger.transaction() as db:
        for i in range(2):
            db.execute(
                "INSERT INTO predictions VALUES (?,?,?,?,?,?,?)",
                (f"late-{i}", 0, "m", 1, "a", time.time(), '{"a": [1, 0.9, "s"]}'),
            )
    slow = psycopg.connect(pg_url)  # replica A: its label insert takes the lower sequence number
    slow.execute(
        "INSERT INTO labels (request_id, row_index, label_index, value, received_at) VALUES ('late-0', 0, 1, NULL, 0)"
    )
    with ledger.transaction() as db:  # replica B commits a later label first
        db.execute(
            "INSERT INTO labels (request_id, row_index, label_index, value, received_at) VALUES ('late-1', 0, 0, NULL, 0)"
        )
    reader = LabelledRows("m", 1, regression=False)
    first = reader.update(ledger)
    assert reader.rows == 1 and first["a"][1].tolist() == [False]
    slow.commit()
    slow.close()
    second = reader.update(ledger)
    assert reader.rows == 2 and sorted(second["a"][1].tolist()) == [False, True]
    assert reader.update(ledger)["a"][1].size == 2, "nothing is read twice"
    ledger.close()


def test_retention_on_several_replicas_deletes_each_row_once(pg_url: str) -> None:
    ledgers = [writer(pg_url, Outcomes(), retention_s=100, max_unlabelled_rows=1000) for _ in range(3)]  # type: ignore[arg-type]
    old = time.time() - 1000
    for i in range(300):
        ledgers[i % 3].record(entry(f"old-{i}", rows=2, created_at=old))
    for i in range(30):
        ledgers[0].record(entry(f"new-{i}"))
    for ledger in ledgers:
        assert ledger.flush()
    deleted: list[int] = []
    threads = [threading.Thread(target=lambda lg=lg: deleted.append(lg.cleanup())) for lg in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    remaining = _count(pg_url)
    assert remaining == 60, "only the new rows are left"
    # replicas that found retention taken skipped it; another round finds nothing left to delete
    assert sum(deleted) + sum(lg.cleanup() for lg in ledgers) == 600
    for ledger in ledgers:
        ledger.close()


def test_a_restarted_server_loses_nothing(private_cluster: PostgresCluster) -> None:
    cluster = private_cluster
    url = cluster.create_database("ledger")
    out = Outcomes()
    ledger = writer(url, out)  # type: ignore[arg-type]
    for i in range(100):
        assert ledger.record(entry(f"before-{i}"))
    assert ledger.flush()
    cluster.stop()
    for i in range(100):  # answers go on while the server is down
        assert ledger.record(entry(f"during-{i}"))
    wait_until(lambda: ledger.health().state == "degraded", 10, "the ledger to say it is degraded")
    health = ledger.health()
    assert health.reason == "ledger_unreachable" and health.pending_rows == 200
    cluster.start()
    wait_until(lambda: ledger.health().state == "ok", 20, "the ledger to recover by itself")
    assert ledger.flush()
    assert _count(url) == 400 and out.committed == 400 and out.counted == 0
    assert ledger.health().reopened >= 1
    ledger.close()


def test_a_server_down_beyond_the_retry_budget_is_counted_with_its_reason(
    private_cluster: PostgresCluster,
) -> None:
    cluster = private_cluster
    url = cluster.create_database("ledger")
    out = Outcomes()
    ledger = writer(url, out, retry_rows=100)  # type: ignore[arg-type]
    cluster.kill()  # kill -9 of the postmaster
    for i in range(300):
        ledger.record(entry(f"lost-{i}"))
    wait_until(
        lambda: out.unrecorded.get("ledger_unreachable", 0) >= 500, 20, "rows beyond the budget counted"
    )
    cluster.start()
    wait_until(lambda: ledger.health().state == "ok", 20, "the ledger to recover")
    assert ledger.flush()
    recorded = _count(url)
    assert recorded + out.counted == 600 and recorded == out.committed, (recorded, out.unrecorded)
    assert set(out.unrecorded) == {"ledger_unreachable"}
    print(f"server down, retry budget 100 rows: answered 600 = recorded {recorded} + counted {out.counted}")
    ledger.close()


def test_a_ledger_of_a_newer_gateway_is_refused_with_both_versions(pg_url: str) -> None:
    Database(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ledger_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(
        LedgerSchemaError,
        match=rf"version {SCHEMA_VERSION + 1}, newer than this gateway's \({SCHEMA_VERSION}\)",
    ):
        Database(pg_url)


def test_postgresql_failures_have_reasons() -> None:
    from psycopg import errors

    assert failure_reason(errors.DiskFull()) == "ledger_full"
    assert failure_reason(errors.ReadOnlySqlTransaction()) == "ledger_read_only"
    assert failure_reason(errors.DeadlockDetected()) == "ledger_locked"
    assert failure_reason(errors.AdminShutdown()) == "ledger_unreachable"
    assert failure_reason(psycopg.OperationalError("connection refused")) == "ledger_unreachable"
    assert failure_reason(errors.UndefinedTable()) == "ledger_error"


def test_the_ledger_throughput_benchmark_runs_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.ledger_throughput import main

    assert main(["--rows", "2000", "--rounds", "1", "--variants", "5"]) == 0
    table = capsys.readouterr().out
    assert "| postgresql |" in table and "| sqlite |" in table


def test_two_replicas_deciding_at_once_record_one_decision(pg_url: str) -> None:
    """Routing decisions on a shared ledger: the second replica to decide from the same state is
    refused (it follows the first one's decision instead), and history keeps the order."""
    from service.ledger.decisions import Decision, history, record

    a, b = Database(pg_url), Database(pg_url)
    try:
        first = Decision("promote", "pg-decide", 1, "vote", "tree", {"n": 1})
        second = Decision("promote", "pg-decide", 1, "vote", "logreg", {"n": 1})
        assert record(a, first, None) and not record(b, second, None)
        undo = Decision("rollback", "pg-decide", 1, "tree", "vote", {"rolls_back": first.id})
        assert record(b, undo, first.id)
        assert [(d.action, d.champion_after) for d in history(a, "pg-decide", 1)] == [
            ("promote", "tree"),
            ("rollback", "vote"),
        ]
    finally:
        a.close()
        b.close()
