"""Confidence-based performance estimation (CBPE), shared by the builder and the service.

A classifier's confidence in the label it served is what the ledger keeps of each answer (the score:
P(class 1) for a binary task, the top-label probability for more classes). The builder maps that
confidence to the observed probability of being right on the validation split (isotonic, so the map
is monotone and its mean over the validation rows equals their accuracy); the service applies the same
map to rows whose labels have not arrived, and the mean is the estimated accuracy. It holds while the
map does: under a covariate shift into regions where the model's confidence means something else, the
estimate is off, and the labels that arrive later show by how much (/compare sets the two side by side).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from contract.manifest import AccuracyEstimator


def confidence(labels: npt.NDArray[Any], scores: npt.NDArray[Any], binary: bool) -> npt.NDArray[np.float64]:
    """Confidence in the served label from what the ledger stores of an answer (class index, score)."""
    s = np.asarray(scores, dtype=np.float64)
    if not binary:
        return s
    return np.where(np.asarray(labels) == 1, s, 1.0 - s)


def expected_correct(estimator: AccuracyEstimator, conf: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """P(right) of each row under the map (rows with a missing confidence are NaN)."""
    return np.interp(
        np.asarray(conf, dtype=np.float64),
        np.asarray(estimator.confidence, dtype=np.float64),
        np.asarray(estimator.correct, dtype=np.float64),
    )
