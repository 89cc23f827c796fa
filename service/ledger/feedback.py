"""Joining late ground-truth labels to recorded predictions.

Each label is validated, then written in one transaction with its outcome: joined (first label for a
known prediction), unknown_id, duplicate (same label again), conflicting (a different label for an
already labelled row: the first one stays), or invalid_label. A joined label scores every model and
combiner that predicted that row, once.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contract.manifest import Manifest
from service import metrics
from service.errors import InvalidField, LedgerUnavailable, PayloadTooLarge, describe
from service.ledger.database import Database, database_errors, failure_reason
from service.ledger.schema import decode_outputs
from service.settings import Settings

EXISTING_LABEL = "SELECT label_index, value FROM labels WHERE request_id = ? AND row_index = ?"
INSERT_LABEL = (
    "INSERT INTO labels (request_id, row_index, label_index, value, received_at) VALUES (?,?,?,?,?) "
    "ON CONFLICT DO NOTHING RETURNING request_id"
)


@dataclass
class FeedbackResult:
    """Counts per outcome, and the first few problems in words."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: self.counts.get(k, 0) for k in metrics.FEEDBACK_OUTCOMES}
        out["received"] = sum(self.counts.values())
        out["errors"] = self.errors[:20]
        return out


def parse_items(body: Any, max_items: int) -> list[Any]:
    """One item, a list of items, or {"labels": [...]}."""
    if isinstance(body, dict) and "labels" in body:
        if set(body) != {"labels"}:
            extra = sorted(set(body) - {"labels"})[0]
            raise InvalidField(extra, "only 'labels'", "an unknown field")
        items = body["labels"]
    elif isinstance(body, dict):
        items = [body]
    else:
        items = body
    if not isinstance(items, list) or not items:
        raise InvalidField("labels", "a non-empty list of {request_id, row, label}", describe(items))
    if len(items) > max_items:
        raise PayloadTooLarge(f"labels: expected at most {max_items} items, got {len(items)}")
    return items


def _label_of(manifest: Manifest, value: Any) -> tuple[int | None, float | None] | None:
    """(class index, None) or (None, value) for a valid label, else None."""
    if manifest.task == "regression":
        if type(value) in (int, float) and math.isfinite(value):
            return None, float(value)
        return None
    for i, c in enumerate(manifest.classes):
        if type(value) is type(c) and value == c:
            return i, None
    # Labels arrive from other systems as strings: "1" for class 1 is the same class.
    as_text = [str(c) for c in manifest.classes]
    if isinstance(value, str) and value in as_text:
        return as_text.index(value), None
    return None


def _check_item(item: Any, i: int, manifest: Manifest) -> tuple[str, int, int | None, float | None] | str:
    """A valid (request_id, row, label index, value), or the reason it is invalid."""
    if not isinstance(item, dict):
        return f"labels[{i}]: expected an object, got {describe(item)}"
    extra = sorted(set(item) - {"request_id", "row", "label"})
    if extra:
        return f"labels[{i}].{extra[0]}: unknown field"
    rid = item.get("request_id")
    if not isinstance(rid, str) or not rid or len(rid) > 128:
        return f"labels[{i}].request_id: expected a request id, got {describe(rid)}"
    row = item.get("row", 0)
    if type(row) is not int or row < 0:
        return f"labels[{i}].row: expected an integer >= 0, got {describe(row)}"
    if "label" not in item:
        return f"labels[{i}].label: missing"
    parsed = _label_of(manifest, item["label"])
    if parsed is None:
        expected = "a finite number" if manifest.task == "regression" else f"one of {manifest.classes}"
        return f"labels[{i}].label: expected {expected}, got {describe(item['label'])}"
    return rid, row, parsed[0], parsed[1]


class FeedbackStore:
    """Label joins against the ledger's database; safe to call from several threads."""

    def __init__(self, settings: Settings, flush: Callable[[], object]) -> None:
        self._flush = flush
        """Commits every prediction answered so far by this worker (wherever the ledger is written)."""
        self._max_items = settings.feedback_max_labels
        self._retry_unknown_s = settings.feedback_retry_s
        """How long to keep looking (every feedback_retry_step_s) for predictions not found: another
        worker (or replica) may have answered them and not written them yet."""
        self._retry_step_s = settings.feedback_retry_step_s
        self._db = Database(settings.ledger_target, lazy=True)
        self._errors = database_errors()
        self._lock = threading.Lock()
        """One connection, used by one thread at a time."""

    def submit(self, manifest: Manifest, body: Any) -> FeedbackResult:
        items = parse_items(body, self._max_items)
        result = FeedbackResult()
        valid: list[tuple[int, str, int, int | None, float | None]] = []
        for i, item in enumerate(items):
            checked = _check_item(item, i, manifest)
            if isinstance(checked, str):
                result.counts["invalid_label"] += 1
                result.errors.append(checked)
            else:
                valid.append((i, *checked))
        if valid:
            # Predictions answered before this label but not yet written must be visible to the join.
            self._flush()
            deadline = time.monotonic() + self._retry_unknown_s
            missing = valid
            while True:
                final = time.monotonic() >= deadline
                with self._lock:
                    missing = self._join(missing, result, final=final)
                if not missing:
                    break
                # Without the lock: other labels join meanwhile.
                time.sleep(min(self._retry_step_s, max(deadline - time.monotonic(), 0.0)))
        for outcome, n in result.counts.items():
            metrics.LABELS.labels(outcome).inc(n)
        return result

    def _join(
        self, valid: list[tuple[int, str, int, int | None, float | None]], result: FeedbackResult, final: bool
    ) -> list[tuple[int, str, int, int | None, float | None]]:
        """Join what can be joined; items with no prediction are counted unknown_id when ``final``,
        else returned for another try."""
        now = time.time()
        missing: list[tuple[int, str, int, int | None, float | None]] = []
        scored: list[tuple[list[tuple[str, int | None, float | None]], int | None, float | None, float]] = []
        # Outcomes are kept aside until the commit: a label is "joined" only once it is durable.
        counts: Counter[str] = Counter()
        errors: list[str] = []
        try:
            self._db.check()
            self._join_rows(valid, final, now, counts, errors, missing, scored)
        except self._errors as exc:
            raise LedgerUnavailable(
                f"ledger: labels could not be written ({failure_reason(exc)}: {exc}); none of this request's "
                "labels were recorded, send them again later"
            ) from exc
        result.counts.update(counts)
        result.errors.extend(errors)
        # Metrics only after the commit: a rolled-back join must not be counted.
        for preds, label_index, value, delay in scored:
            metrics.LABEL_DELAY.observe(max(delay, 0.0))
            for variant, pred_label, score in preds:
                metrics.SCORED.labels(variant).inc()
                if value is None:
                    metrics.FEEDBACK.labels(
                        variant, "correct" if pred_label == label_index else "incorrect"
                    ).inc()
                else:
                    err = float(score if score is not None else math.nan) - value
                    metrics.ABS_ERROR.labels(variant).inc(abs(err))
                    metrics.SQUARED_ERROR.labels(variant).inc(err * err)
        return missing

    def _join_rows(
        self,
        valid: list[tuple[int, str, int, int | None, float | None]],
        final: bool,
        now: float,
        counts: Counter[str],
        errors: list[str],
        missing: list[tuple[int, str, int, int | None, float | None]],
        scored: list[tuple[list[tuple[str, int | None, float | None]], int | None, float | None, float]],
    ) -> None:
        """One transaction: every label looked up, checked against an earlier one, and inserted."""
        with self._db.transaction() as c:
            for i, rid, row, label_index, value in valid:
                found = c.execute(
                    "SELECT outputs, created_at FROM predictions WHERE request_id = ? AND row_index = ?",
                    (rid, row),
                ).fetchone()
                if found is None and not final:
                    missing.append((i, rid, row, label_index, value))
                    continue
                if found is None:
                    counts["unknown_id"] += 1
                    errors.append(f"labels[{i}]: no prediction recorded for request {rid!r} row {row}")
                    continue
                existing = c.execute(EXISTING_LABEL, (rid, row)).fetchone()
                if (
                    existing is None
                    and c.execute(INSERT_LABEL, (rid, row, label_index, value, now)).fetchone() is None
                ):
                    # Another replica labelled this row since the look just now: its label stands.
                    existing = c.execute(EXISTING_LABEL, (rid, row)).fetchone()
                if existing is not None:
                    same = existing[0] == label_index and (existing[1] == value)
                    counts["duplicate" if same else "conflicting"] += 1
                    if not same:
                        errors.append(
                            f"labels[{i}]: request {rid!r} row {row} already has another label; "
                            "the first one is kept"
                        )
                    continue
                counts["joined"] += 1
                preds: list[tuple[str, int | None, float | None]] = [
                    (v, o[0], o[1]) for v, o in decode_outputs(found[0]).items()
                ]
                scored.append((preds, label_index, value, float(now - found[1])))

    def close(self) -> None:
        self._db.close()
