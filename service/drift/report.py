"""The /drift document: the ledger's live counts of a window, summed over workers and replicas, set
against the version's reference column by column; and the gauges that publish it."""

from __future__ import annotations

import time
from typing import Any

from contract.reference import Binner
from service import metrics
from service.ledger.database import Database
from service.ledger.inputs import BUCKET_S, read_bins
from service.runtime.repository import LoadedRepository
from service.stats.drift import PSI_DRIFTED, PSI_MODERATE, column_drift


def drift_document(db: Database, repo: LoadedRepository, window_s: float, min_rows: int) -> dict[str, Any]:
    """Drift of every input column over the last ``window_s`` seconds (whole minute buckets)."""
    m, ref = repo.manifest, repo.reference
    doc: dict[str, Any] = {
        "model": m.name,
        "version": m.version,
        "window_s": window_s,
        "thresholds": {"psi_moderate": PSI_MODERATE, "psi_drifted": PSI_DRIFTED, "min_rows": min_rows},
    }
    if ref is None:
        return {
            **doc,
            "available": False,
            "reason": "this version has no input reference (built before references were written): rebuild "
            "it with `gateway build` to see drift",
            "columns": [],
        }
    binner = Binner(ref.columns)
    since = (int(time.time() - window_s) // BUCKET_S) * BUCKET_S
    live = read_bins(db, m.name, m.version, binner.size, since)
    columns = [
        column_drift(c, counts, min_rows)
        for c, counts in zip(ref.columns, binner.split(live.counts), strict=True)
    ]
    order = sorted(columns, key=lambda c: -c["psi"])
    return {
        **doc,
        "available": True,
        "since": live.first_bucket,
        "rows": live.rows,
        "workers": live.workers,
        "reference": {"split": ref.split, "rows": ref.rows},
        "drifted": [c["column"] for c in order if c["status"] == "drifted"],
        "columns": columns,
    }


def publish(doc: dict[str, Any], max_series: int) -> None:
    """Set the drift gauges from a /drift document (the first ``max_series`` columns)."""
    if not doc.get("available"):
        return
    metrics.INPUT_DRIFT_ROWS.set(doc["rows"])
    for column in doc["columns"][:max_series]:
        metrics.INPUT_DRIFT_PSI.labels(column["column"]).set(column["psi"])
        metrics.INPUT_DRIFT_P_VALUE.labels(column["column"]).set(column["p_value"])
