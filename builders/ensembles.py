"""Choosing ensemble members for diversity, weighting them, and fitting the stacking meta-learner.

Member selection rule (greedy, documented in the report): start from the member with the best
validation score; then repeatedly add the candidate with the highest

    utility = normalised_score - DIVERSITY_WEIGHT * mean error correlation with those already chosen

where normalised_score maps the baseline's validation score to 0 and the best member's to 1.
Candidates scoring below the midpoint between baseline and best are not considered (unless fewer
than three pass, then the three best are), and the number of members is odd (3, or 5 when at least
7 candidates qualify) so a binary hard vote cannot tie; only a field of two models gives a pair.
Candidates slower than LATENCY_FACTOR times the median member (single-row ONNX latency) are left out
while enough others remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LinearRegression, LogisticRegression

SELECTION_RULE = (
    "greedy: start from the member with the best validation score; then repeatedly add the candidate "
    "with the highest utility = normalised score - 0.5 x its mean error correlation with the members "
    "already chosen (normalised score: the baseline's validation score is 0, the best member's 1). "
    "Candidates below the midpoint between baseline and best are not considered (unless fewer than "
    "three pass; then the three best are), nor those slower than 5x the median member's single-row "
    "latency while enough others remain; the count is odd (3, or 5 when at least 7 qualify) so a binary "
    "vote cannot tie."
)
"""The member-selection rule in words, whole, for the report."""
DIVERSITY_WEIGHT = 0.5
LATENCY_FACTOR = 5.0
"""A candidate slower than this multiple of the median member's single-row latency stays out of the
ensembles: an ensemble answers no faster than its slowest member."""


def error_matrix(
    task: str, y: npt.NDArray[Any], predictions: Sequence[npt.NDArray[Any]]
) -> npt.NDArray[np.float64]:
    """Errors per member: 0/1 misclassification indicators, or residuals for regression; (members, rows)."""
    preds = np.asarray(predictions, dtype=np.float64)
    if task == "regression":
        return preds - np.asarray(y, dtype=np.float64)[None, :]
    return (preds != np.asarray(y)[None, :]).astype(np.float64)


def error_correlation(errors: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Pearson correlation of members' errors; a member with constant errors correlates 0 with others."""
    centred = errors - errors.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    safe = np.where(norms > 0, norms, 1.0)
    corr = (centred @ centred.T) / np.outer(safe, safe)
    corr[norms == 0, :] = 0.0
    corr[:, norms == 0] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def disagreement(predictions: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    """Share of rows on which two members' labels differ; (members, members)."""
    preds = np.asarray(predictions)
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=2)


def select_members(
    names: Sequence[str],
    scores: Sequence[float],
    baseline_score: float,
    corr: npt.NDArray[np.float64],
    latencies: Sequence[float] | None = None,
) -> list[str]:
    """Greedy diverse selection (see the module docstring); ``scores`` are higher-is-better."""
    s = np.asarray(scores, dtype=np.float64)
    if len(names) < 2:
        return list(names)
    best = s.max()
    span = best - baseline_score
    norm = (s - baseline_score) / span if span > 0 else np.ones_like(s)
    fast = set(range(len(names)))
    if latencies is not None:
        lat = np.asarray(latencies, dtype=np.float64)
        fast = {i for i in range(len(names)) if lat[i] <= LATENCY_FACTOR * float(np.median(lat))}
    eligible = [i for i in range(len(names)) if norm[i] >= 0.5 and i in fast]
    if len(eligible) < 3:
        # Too few strong, fast candidates for an odd vote: take the three best fast ones (or any).
        pool = [int(i) for i in np.argsort(-s, kind="stable") if int(i) in fast]
        pool += [int(i) for i in np.argsort(-s, kind="stable") if int(i) not in fast]
        eligible = pool[: min(3, len(names))]
    size = 5 if len(eligible) >= 7 else 3
    size = min(size, len(eligible))
    chosen = [int(max(eligible, key=lambda i: s[i]))]
    while len(chosen) < size:
        rest = [i for i in eligible if i not in chosen]
        if not rest:
            break
        utility = {i: norm[i] - DIVERSITY_WEIGHT * float(np.mean(corr[i, chosen])) for i in rest}
        chosen.append(max(rest, key=lambda i: (utility[i], s[i])))
    return [names[i] for i in chosen]


def skill_weights(scores: Sequence[float], baseline_score: float) -> list[float]:
    """Weights proportional to each member's validation skill above the baseline (uniform if none)."""
    skill = np.maximum(np.asarray(scores, dtype=np.float64) - baseline_score, 0.0)
    if skill.sum() <= 0:
        return [1.0] * len(skill)
    return [round(float(w), 6) for w in skill / skill.sum()]


def independent_vote_accuracy(accuracies: Sequence[float]) -> float:
    """P(a strict majority is right) if members erred independently (Poisson-binomial).

    Three independent 70% members: 0.7^3 + 3 * 0.7^2 * 0.3 = 0.784. With an even count, a tie counts
    as half right (a coin flip between the two camps).
    """
    dist = np.array([1.0])
    for p in accuracies:
        dist = np.convolve(dist, [1 - p, p])
    m = len(accuracies)
    k = np.arange(m + 1)
    value = dist[k > m / 2].sum()
    if m % 2 == 0:
        value += 0.5 * dist[m // 2]
    return float(value)


def meta_learner(task: str, seed: int) -> Any:
    """The stacking meta-learner (unfitted): logistic regression, or a linear regression with
    non-negative weights (readable as member weights) for regression."""
    if task == "regression":
        return LinearRegression(positive=True)
    # Converged far past the default tolerance: member probabilities sum to 1, so the features are
    # nearly collinear and L-BFGS stopping at 1e-4 landed on coefficients 0.02 apart depending on the
    # last bits of BLAS sums (seen between a loaded and a quiet run of the same build).
    return LogisticRegression(max_iter=10_000, tol=1e-10, random_state=seed)


def fit_meta(task: str, features: npt.NDArray[np.float32], y: npt.NDArray[Any], seed: int) -> Any:
    """The meta-learner fitted on out-of-fold member outputs."""
    return meta_learner(task, seed).fit(features, y)
