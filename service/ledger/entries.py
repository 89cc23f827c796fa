"""What the ledger records: entries of answered requests, and their SQL rows (one per request row)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from contract.outputs import Output
from service.ledger.schema import ROLE_CODES


@dataclass(frozen=True)
class Entry:
    """Outputs of one or more requests to record.

    ``outputs`` holds batch outputs over all the entry's rows (request after request, in order) with
    the role every request gave that variant; ``served`` holds, per request, the variant that
    answered and its answer, which is recorded with the role "served" for that request's rows.
    """

    request_ids: list[str]
    rows: list[int]
    served: list[tuple[str, Output]]
    model: str
    version: int
    created_at: float
    outputs: dict[str, tuple[str, Output]]
    batches: Counter[int] = field(default_factory=Counter)
    """Jobs of this entry per evaluator batch (evaluator process only): a batch is confirmed to its
    worker once every entry holding its jobs is committed or counted as dropped."""

    @property
    def row_count(self) -> int:
        return sum(self.rows)


def _columns(out: Output) -> tuple[list[Any], list[float]]:
    """(class indices or Nones, scores): P(class 1) for binary, max P for multiclass, the value for
    regression."""
    if out.values is not None:
        return [None] * len(out.values), out.values.tolist()
    assert out.labels is not None and out.proba is not None
    scores = out.proba[:, 1] if out.proba.shape[1] == 2 else np.max(out.proba, axis=1)
    return out.labels.tolist(), scores.tolist()


def entry_rows(entry: Entry) -> list[tuple[Any, ...]]:
    """One SQL row per request row; ``outputs`` maps every variant that predicted it to
    [class index or null, score, role code]. One row instead of one per variant keeps the write cost
    flat as candidates are added."""
    columns = [(v, *_columns(out), ROLE_CODES[role]) for v, (role, out) in entry.outputs.items()]
    served_code = ROLE_CODES["served"]
    rows: list[tuple[Any, ...]] = []
    offset = 0
    for rid, n, (served, answer) in zip(entry.request_ids, entry.rows, entry.served, strict=True):
        s_labels, s_scores = _columns(answer)
        for i in range(n):
            k = offset + i
            doc = {v: [labels[k], scores[k], code] for v, labels, scores, code in columns if v != served}
            doc[served] = [s_labels[i], s_scores[i], served_code]
            rows.append(
                (rid, i, entry.model, entry.version, served, entry.created_at, orjson.dumps(doc).decode())
            )
        offset += n
    return rows
