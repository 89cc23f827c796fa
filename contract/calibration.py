"""Calibration of classifiers, computed the same way offline (builders, on the test split) and online
(service, on labelled rows from the ledger): Brier score, expected calibration error, reliability bins,
and the binary log loss.

What is calibrated: for a binary task, P(class 1) against "the label is class 1"; for more classes,
the top-label confidence (the largest probability) against "the predicted label is right", which is
what the ledger keeps of each answer (the full vector is not stored). ECE uses ``BINS`` equal-width
bins on [0, 1], weighted by the rows in each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

BINS = 10
EPS = 1e-15


def targets(
    proba: npt.NDArray[Any], y: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """(score, hit) of each row from full probability rows and true class indices."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if p.shape[1] == 2:
        return p[:, 1], y == 1
    return p.max(axis=1), p.argmax(axis=1) == y


def brier(score: npt.NDArray[np.float64], hit: npt.NDArray[np.bool_]) -> float:
    return float(np.mean((score - hit) ** 2)) if len(score) else float("nan")


def binary_log_loss(score: npt.NDArray[np.float64], hit: npt.NDArray[np.bool_]) -> float:
    """Mean negative log likelihood of the outcome under ``score`` (for a binary task, the log loss)."""
    p = np.clip(score, EPS, 1 - EPS)
    return float(-np.mean(np.where(hit, np.log(p), np.log(1 - p)))) if len(score) else float("nan")


def _bin_of(score: npt.NDArray[np.float64], bins: int) -> npt.NDArray[np.int64]:
    return np.minimum((np.clip(score, 0.0, 1.0) * bins).astype(np.int64), bins - 1)


def ece(score: npt.NDArray[np.float64], hit: npt.NDArray[np.bool_], bins: int = BINS) -> float:
    """Expected calibration error: the row-weighted mean gap between confidence and frequency."""
    n = len(score)
    if n == 0:
        return float("nan")
    b = _bin_of(score, bins)
    counts = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, weights=score, minlength=bins) - np.bincount(b, weights=hit, minlength=bins))
    return float(gap.sum() / n) if counts.sum() else float("nan")


def reliability(
    score: npt.NDArray[np.float64], hit: npt.NDArray[np.bool_], bins: int = BINS
) -> list[dict[str, Any]]:
    """Reliability-curve data: per bin its range, rows, mean score and observed frequency."""
    b = _bin_of(score, bins)
    counts = np.bincount(b, minlength=bins)
    sums = np.bincount(b, weights=score, minlength=bins)
    hits = np.bincount(b, weights=hit, minlength=bins)
    return [
        {
            "low": i / bins,
            "high": (i + 1) / bins,
            "n": int(counts[i]),
            "mean_score": float(sums[i] / counts[i]) if counts[i] else None,
            "observed": float(hits[i] / counts[i]) if counts[i] else None,
        }
        for i in range(bins)
    ]
