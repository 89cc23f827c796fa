"""/drift on a served repository: rows counted against the training reference, merged over workers
(two LiveInputs writing one ledger), a shifted column flagged and the others not, bad windows 400."""

from __future__ import annotations

import json
import shutil
import sqlite3
from typing import Any

import numpy as np
import pytest

from contract.manifest import MANIFEST_FILE
from contract.reference import REFERENCE_FILE, Binner
from contract.verify import load_reference, verify
from service.core.gateway import Gateway
from service.core.requests import parse_predict
from service.drift.live import LiveInputs
from service.settings import Settings
from tests.helpers import churn_frame, to_records


def _records(n: int, seed: int, age_shift: float = 0.0, city: str | None = None) -> list[dict[str, Any]]:
    frame = churn_frame(n, seed=seed).drop(columns=["target", "row_id"])
    frame["age"] = frame["age"] + age_shift
    if city is not None:
        frame["city"] = city
    return to_records(frame)


def _send(client: Any, records: list[dict[str, Any]]) -> None:
    for i in range(0, len(records), 50):
        r = client.post("/predict", json={"records": records[i : i + 50]})
        assert r.status_code == 200, r.text


def _by_column(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in doc["columns"]}


def test_reference_is_in_the_repository_and_checksummed(built_repo: Any) -> None:
    manifest = verify(built_repo.version)
    assert REFERENCE_FILE in manifest.files
    ref = load_reference(built_repo.version, manifest)
    assert ref is not None and [c.name for c in ref.columns] == [c.name for c in manifest.inputs]
    for column in ref.columns:
        assert sum(column.counts) == ref.rows  # every training row in exactly one bin of each column
    age = next(c for c in ref.columns if c.name == "age")
    assert age.counts[-1] > 0  # the missing bin holds the rows without an age
    assert max(age.counts[:-1]) - min(age.counts[:-1]) <= 2  # deciles: equal bins


def test_unshifted_traffic_is_stable_and_a_shift_shows_in_its_column_only(client: Any) -> None:
    _send(client, _records(600, seed=7))
    doc = client.get("/drift").json()
    assert doc["available"] and doc["rows"] == 600
    cols = _by_column(doc)
    assert all(c["rows"] == 600 for c in cols.values())
    assert all(c["status"] == "stable" for c in cols.values()), {k: c["psi"] for k, c in cols.items()}
    assert doc["drifted"] == []

    _send(client, _records(1200, seed=8, age_shift=15, city="nice"))
    cols = _by_column(client.get("/drift").json())
    assert cols["age"]["status"] == "drifted" and cols["age"]["p_value"] < 1e-6
    assert cols["city"]["status"] == "drifted" and cols["city"]["test"] == "chi2"
    assert cols["city"]["p_value"] < 1e-6
    for name in ("monthly income", "plan"):
        assert cols[name]["status"] == "stable", cols[name]
        assert cols[name]["p_value"] > 1e-3


def test_drift_gauges_follow_the_document(client: Any) -> None:
    _send(client, _records(300, seed=9, age_shift=20))
    client.get("/drift")
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith('gateway_input_drift_psi{column="age"}'))
    assert float(line.split()[-1]) > 0.25
    assert "gateway_input_drift_rows 300.0" in text


@pytest.mark.parametrize("window", ["1", "abc", "nan", "1e12", "-60"])
def test_bad_window_is_a_400_naming_the_field(client: Any, window: str) -> None:
    r = client.get("/drift", params={"window": window})
    assert r.status_code == 400 and r.json()["error"].startswith("window: expected seconds")


def test_counts_of_two_workers_merge_and_a_failed_write_is_retried(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers (two LiveInputs) write one ledger: /drift sums them. A write that fails (disk full,
    injected) keeps the counts, the next flush writes them, and rewriting never counts twice."""
    from service.drift import live

    gw = Gateway(settings)
    gw.load()
    other = LiveInputs(settings)
    other.attach(gw.repo)
    try:
        records = _records(100, seed=3)
        for i in range(0, 100, 25):
            request = parse_predict({"records": records[i : i + 25]}, gw.repo.manifest, 64, None)
            other.observe(request.feeds, request.rows)
            gw.inputs.observe(request.feeds, request.rows)
        real = live.write_bins

        def full(*args: Any, **kwargs: Any) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(live, "write_bins", full)
        assert not other.flush() and other.failures == 1 and "ledger_full" in other.last_error
        monkeypatch.setattr(live, "write_bins", real)
        doc = gw.drift()
        assert doc["rows"] == 100 and doc["workers"] == 1  # the other worker's counts are still pending
        assert other.flush()
        doc = gw.drift()
        assert doc["rows"] == 200 and doc["workers"] == 2
        other.observe(request.feeds, request.rows)
        assert other.flush() and other.flush()
        assert gw.drift()["rows"] == 225  # the bucket is rewritten whole, never added twice
        ages = _by_column(doc)["age"]["bins"]
        assert abs(sum(b["live"] for b in ages) - 1) < 1e-6
        assert gw.repo.reference is not None
        counts = Binner(gw.repo.reference.columns).count(request.feeds, ["city", "plan"])
        assert int(np.sum(counts)) == 25 * len(gw.repo.reference.columns)  # each row once per column
    finally:
        other.close()
        gw.close()


def test_queued_requests_are_binned_in_batches_and_a_full_queue_counts_what_it_drops(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request path only queues; a flush bins the queue in chunks (the same counts as binning each
    request alone); beyond MAX_UNBINNED queued requests the oldest are dropped and counted."""
    from service import metrics
    from service.drift import live

    monkeypatch.setattr(live, "MAX_UNBINNED", 6)
    monkeypatch.setattr(live, "BIN_CHUNK_ROWS", 7)  # several chunks per flush
    gw = Gateway(settings)
    gw.load()
    try:
        assert gw.repo.reference is not None
        binner = Binner(gw.repo.reference.columns)
        records = _records(80, seed=5)
        before = metrics.INPUT_ROWS_UNCOUNTED._value.get()
        expected = np.zeros(binner.size, dtype=np.int64)
        for i in range(0, 80, 10):  # 8 requests of 10 rows: the first 2 are dropped
            request = parse_predict({"records": records[i : i + 10]}, gw.repo.manifest, 64, None)
            gw.inputs.observe(request.feeds, request.rows)
            if i >= 20:
                expected += binner.count(request.feeds, ["city", "plan"])
        assert metrics.INPUT_ROWS_UNCOUNTED._value.get() - before == 20
        assert gw.inputs.flush()
        doc = gw.drift()
        assert doc["rows"] == 60
        got = np.concatenate(
            [[round(b["live"] * c["rows"]) for b in c["bins"]] for c in doc["columns"]]
        ).astype(np.int64)
        assert (got == expected).all()
    finally:
        gw.close()


def test_a_version_without_reference_says_so(built_repo: Any, settings: Settings, tmp_path: Any) -> None:
    """A version built before references were written is served as before; /drift says why it is empty."""
    old = tmp_path / "churn" / "1"
    shutil.copytree(built_repo.version, old)
    (old / REFERENCE_FILE).unlink()
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    del manifest["files"][REFERENCE_FILE]
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    gw = Gateway(settings.model_copy(update={"repository": old}))
    gw.load()
    try:
        gw.answer(
            gw.repo, gw.router, parse_predict({"records": _records(5, seed=1)}, gw.repo.manifest, 64, None)
        )
        doc = gw.drift()
        assert doc["available"] is False and "rebuild" in doc["reason"] and doc["columns"] == []
    finally:
        gw.close()


def test_replicas_on_postgresql_merge_their_counts(settings: Settings, pg_url: str) -> None:
    """Three replicas' workers writing one PostgreSQL ledger: one /drift over all of them."""
    pg = settings.model_copy(update={"ledger_url": pg_url})
    gw = Gateway(pg)
    gw.load()
    others = [LiveInputs(pg) for _ in range(2)]
    try:
        request = parse_predict({"records": _records(40, seed=5)}, gw.repo.manifest, 64, None)
        for inputs in (gw.inputs, *others):
            if inputs is not gw.inputs:
                inputs.attach(gw.repo)
            inputs.observe(request.feeds, request.rows)
            assert inputs.flush()
        doc = gw.drift()
        assert doc["rows"] == 120 and doc["workers"] == 3
    finally:
        for inputs in others:
            inputs.close()
        gw.close()
