"""Binary tasks (detectors above all: class 1 is the anomaly): precision and recall of the flagged
rows with 95% Wilson intervals, average precision of the score, and a paired test between two
models on recall (McNemar on the true anomalies both answered).

From the labelled rows the ledger reads (service.ledger.reads): per row, whether the served label was
right and whether the truth is class 1, so the flag is known without storing it twice (a row is
flagged exactly when "right" and "truly class 1" agree), and the score is P(class 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from service.stats.significance import Interval, accuracy_interval, mcnemar


def flags(correct: npt.NDArray[np.bool_], hit: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Whether each row was flagged (answered class 1), from its correctness and its truth."""
    return np.asarray(hit, dtype=np.bool_) == np.asarray(correct, dtype=np.bool_)


def average_precision(score: npt.NDArray[Any], hit: npt.NDArray[np.bool_]) -> float | None:
    """Mean precision at each true anomaly's rank, rows by descending score (ties share the precision
    of the whole tied block, as scikit-learn's step curve does)."""
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(hit, dtype=np.bool_)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if not y.any():
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end of each block of equal scores
    tp = np.cumsum(y)[last]
    seen = last + 1
    precision = tp / seen
    gained = np.diff(np.r_[0, tp])
    return float(np.sum(precision * gained) / y.sum())


def average_precision_interval(score: npt.NDArray[Any], hit: npt.NDArray[np.bool_]) -> Interval:
    """Average precision of ``score`` against ``hit`` with its 95% logit interval (:func:`ap_interval`)."""
    y = np.asarray(hit, dtype=np.bool_)
    return ap_interval(average_precision(score, y), int(y.sum()), len(y))


def ap_interval(value: float | None, positives: int, n: int) -> Interval:
    """A 95% logit interval for an average precision over ``positives`` true rows:
    logit(AP) +- 1.96 / sqrt(positives * AP * (1 - AP)) (Boyd, Eng and Page 2013, "Area under the
    precision-recall curve: point estimates and confidence intervals": close to nominal coverage from a
    few dozen positives, and constant-time, where a bootstrap would re-sort every labelled row hundreds
    of times on each read of /compare)."""
    if value is None:
        return Interval(None, None, None, n)
    p = min(max(value, 1e-9), 1 - 1e-9)
    eta, tau = np.log(p / (1 - p)), 1.0 / np.sqrt(positives * p * (1 - p))
    low, high = (float(1 / (1 + np.exp(-(eta + z * tau)))) for z in (-1.96, 1.96))
    return Interval(value, low, high, n)


def detection_row(
    correct: npt.NDArray[np.bool_],
    score: npt.NDArray[Any],
    hit: npt.NDArray[np.bool_],
    offline: Mapping[str, float],
) -> dict[str, Any]:
    """One model's online precision, recall (Wilson intervals) and average precision, beside its
    card's test values."""
    flagged = flags(correct, hit)
    truth = np.asarray(hit, dtype=np.bool_)
    tp = int(np.sum(flagged & truth))
    precision = accuracy_interval(tp, int(flagged.sum()))
    recall = accuracy_interval(tp, int(truth.sum()))
    return {
        "n": len(truth),
        "positives": int(truth.sum()),
        "flagged": int(flagged.sum()),
        "precision": precision.value,
        "precision_low": precision.low,
        "precision_high": precision.high,
        "recall": recall.value,
        "recall_low": recall.low,
        "recall_high": recall.high,
        "average_precision": average_precision(score, truth),
        "offline_precision": offline.get("precision"),
        "offline_recall": offline.get("recall"),
        "offline_average_precision": offline.get("average_precision"),
    }


def paired_recall(
    keys_a: npt.NDArray[np.int64],
    flagged_a: npt.NDArray[np.bool_],
    keys_b: npt.NDArray[np.int64],
    flagged_b: npt.NDArray[np.bool_],
    truth_a: npt.NDArray[np.bool_],
) -> dict[str, Any]:
    """Champion (a) against another model (b) on the true anomalies both answered: exact McNemar on
    the anomalies only one of them flagged."""
    common, ia, ib = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
    anomalies = truth_a[ia]
    a, b = flagged_a[ia][anomalies], flagged_b[ib][anomalies]
    only_a, only_b, p = mcnemar(a, b)
    n = int(anomalies.sum())
    return {
        "anomalies": n,
        "champion_recall": float(a.mean()) if n else None,
        "challenger_recall": float(b.mean()) if n else None,
        "only_champion_flagged": only_a,
        "only_challenger_flagged": only_b,
        "p_value": p if n else None,
        "test": "exact McNemar on the true anomalies only one model flagged (fixed-sample)",
        "rows": len(common),
    }
