"""Accuracy estimated before labels arrive (confidence-based performance estimation), and its check
against the labels that did arrive.

Each row's probability of being right comes from the model card's isotonic map (contract/estimation.py)
applied to the confidence the ledger recorded. The estimate is their mean over the most recent rows
without a label. Its 95% interval is normal with two variance terms: the outcomes of those rows
(a Poisson-binomial: sum of g(1-g) over m rows, divided by m squared) and the map's own error from the
validation rows it was fitted on (about mean g(1-g) / n_validation, the variance of a mean of n
Bernoulli outcomes). The simulation in tests/unit/service/test_estimates.py (and
benchmarks/estimates.py at full size) checks that the interval covers the realised accuracy about 95%
of the time on unshifted data, and shows how far off it is under a shift.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.estimation import confidence, expected_correct
from contract.manifest import AccuracyEstimator

Z95 = 1.959963984540054


def interval(expected: npt.NDArray[np.float64], fitted_rows: int) -> tuple[float, float, float] | None:
    """(estimate, low, high) of the accuracy over rows whose P(right) are ``expected``."""
    g = expected[~np.isnan(expected)]
    if not len(g):
        return None
    est = float(g.mean())
    spread = float(np.mean(g * (1.0 - g)))
    half = Z95 * math.sqrt(spread * (1.0 / len(g) + 1.0 / fitted_rows))
    return est, max(0.0, est - half), min(1.0, est + half)


def _entry(found: tuple[float, float, float] | None, rows: int) -> dict[str, Any]:
    if found is None:
        return {"rows": rows, "accuracy": None, "low": None, "high": None}
    est, low, high = found
    return {"rows": rows, "accuracy": round(est, 6), "low": round(low, 6), "high": round(high, 6)}


def accuracy_estimate(
    estimator: AccuracyEstimator | None,
    binary: bool,
    unlabelled: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None,
    labelled: tuple[npt.NDArray[Any], npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None,
) -> dict[str, Any]:
    """One model's estimate on its unlabelled rows, and the same estimate on its labelled rows set
    beside their actual accuracy. ``unlabelled``: (class indices, scores) as the ledger keeps them;
    ``labelled``: (score, hit, correct) as service.ledger.reads reads them (hit is "the label is class
    1" for a binary task, "right" otherwise)."""
    if estimator is None:
        return {
            "available": False,
            "reason": "the model card has no accuracy estimator (built before estimates existed): rebuild "
            "the repository with `gateway build`",
        }
    out: dict[str, Any] = {"available": True, "method": "cbpe", "fitted_rows": estimator.rows}
    labels, scores = unlabelled if unlabelled is not None else (np.empty(0), np.empty(0))
    g = expected_correct(estimator, confidence(labels, scores, binary))
    out["unlabelled"] = _entry(interval(g, estimator.rows), int((~np.isnan(g)).sum()))
    check: dict[str, Any] = {"rows": 0, "estimated": None, "low": None, "high": None, "actual": None}
    if labelled is not None and len(labelled[0]):
        score, hit, correct = (np.asarray(a) for a in labelled)
        keep = ~np.isnan(score.astype(np.float64))
        score, hit, correct = score[keep].astype(np.float64), hit[keep], correct[keep]
        # a binary answer's label is class 1 exactly when "is class 1" and "is right" agree
        served = (hit == correct).astype(np.int64) if binary else np.zeros(len(score), dtype=np.int64)
        found = interval(expected_correct(estimator, confidence(served, score, binary)), estimator.rows)
        if found is not None:
            est, low, high = found
            actual = float(correct.mean())
            check = {
                "rows": len(score),
                "estimated": round(est, 6),
                "low": round(low, 6),
                "high": round(high, 6),
                "actual": round(actual, 6),
                "error": round(est - actual, 6),
                "covered": bool(low <= actual <= high),
            }
    out["labelled_check"] = check
    return out
