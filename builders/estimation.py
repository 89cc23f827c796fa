"""Fitting the accuracy estimator (contract/estimation.py) of one model on its validation outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

from contract.estimation import confidence
from contract.manifest import AccuracyEstimator
from contract.outputs import Output


def fit_estimator(out: Output, y: Any, n_classes: int) -> AccuracyEstimator | None:
    """The isotonic map confidence -> P(right) of ``out`` (served validation outputs) against the true
    class indices ``y``; None for regression outputs."""
    if out.labels is None or out.proba is None:
        return None
    binary = n_classes == 2
    scores = out.proba[:, 1] if binary else out.proba.max(axis=1)
    conf = confidence(out.labels, scores, binary)
    right = (np.asarray(out.labels) == np.asarray(y)).astype(np.float64)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(conf, right)
    return AccuracyEstimator(
        confidence=[round(float(v), 6) for v in iso.X_thresholds_],
        correct=[round(float(v), 6) for v in iso.y_thresholds_],
        rows=len(right),
        accuracy=round(float(right.mean()), 6),
    )
