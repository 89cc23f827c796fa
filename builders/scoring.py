"""Offline metrics, the cost-based decision threshold, the Pareto front and the champion rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from contract import calibration
from contract.combine import apply_threshold

HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "roc_auc": True,
    "rmse": False,
    "mae": False,
    "r2": True,
    "cost": False,
    "average_precision": True,
    "precision": True,
    "recall": True,
}


def detection_metrics(
    y: npt.NDArray[Any], p_anomaly: npt.NDArray[Any], labels: npt.NDArray[Any]
) -> dict[str, float]:
    """Detectors (class 1 = anomaly): precision and recall of the flagged rows, average precision of
    the anomaly score (the area under the precision-recall curve, as scikit-learn steps it)."""
    y = np.asarray(y)
    return {
        "precision": float(precision_score(y, labels, pos_label=1, zero_division=0)),
        "recall": float(recall_score(y, labels, pos_label=1, zero_division=0)),
        "average_precision": float(average_precision_score(y, p_anomaly)) if y.any() else 0.0,
    }


def primary_metric(task: str) -> str:
    """The metric the leaderboard, ensemble weights and champion rule use."""
    return {"regression": "rmse", "anomaly": "average_precision"}.get(task, "accuracy")


def classification_metrics(
    y: npt.NDArray[Any],
    proba: npt.NDArray[Any],
    labels: npt.NDArray[Any],
    n_classes: int,
    costs: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Accuracy and F1 of the served labels; log loss, ROC AUC, Brier score and expected calibration
    error of the probabilities (binary: of P(class 1); more classes: of the top-label confidence)."""
    out = {"accuracy": float(accuracy_score(y, labels))}
    if n_classes == 2:
        out["f1"] = float(f1_score(y, labels, pos_label=1, zero_division=0))
    else:
        out["f1"] = float(f1_score(y, labels, average="macro", zero_division=0))
    clipped = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    out["log_loss"] = float(log_loss(y, clipped, labels=list(range(n_classes))))
    # the same definitions as online (contract/calibration.py), so /compare sets them side by side
    score, hit = calibration.targets(clipped, np.asarray(y))
    out["brier"] = calibration.brier(score, hit)
    out["ece"] = calibration.ece(score, hit)
    present = len(np.unique(y))
    if present == n_classes:
        if n_classes == 2:
            out["roc_auc"] = float(roc_auc_score(y, clipped[:, 1]))
        else:
            out["roc_auc"] = float(
                roc_auc_score(y, clipped, multi_class="ovr", labels=list(range(n_classes)))
            )
    if costs is not None and n_classes == 2:
        out["cost"] = expected_cost(y, labels, *costs)
    return out


def regression_metrics(y: npt.NDArray[Any], pred: npt.NDArray[Any]) -> dict[str, float]:
    """RMSE, MAE and R2."""
    p = np.ravel(pred)
    return {
        "rmse": float(root_mean_squared_error(y, p)),
        "mae": float(mean_absolute_error(y, p)),
        "r2": float(r2_score(y, p)),
    }


def expected_cost(y: npt.NDArray[Any], labels: npt.NDArray[Any], fp_cost: float, fn_cost: float) -> float:
    """Mean cost per row: fp_cost per false positive, fn_cost per false negative (class 1 positive)."""
    y = np.asarray(y)
    labels = np.asarray(labels)
    fp = np.sum((labels == 1) & (y == 0))
    fn = np.sum((labels == 0) & (y == 1))
    return float((fp_cost * fp + fn_cost * fn) / max(len(y), 1))


def choose_threshold(p1: npt.NDArray[Any], y: npt.NDArray[Any], fp_cost: float, fn_cost: float) -> float:
    """The threshold on P(class 1) minimising expected cost on validation rows.

    Candidates are midpoints between consecutive distinct probabilities (plus the cost-optimal
    threshold for calibrated probabilities, fp/(fp+fn)); ties go to the candidate closest to it.
    """
    bayes = fp_cost / (fp_cost + fn_cost)
    values = np.unique(np.concatenate([[0.0, 1.0], np.asarray(p1, dtype=np.float64)]))
    lo, hi = values[:-1], values[1:]
    mids = (lo + hi) / 2
    # Adjacent floats have no midpoint between them (it rounds onto the lower one, which then falls on
    # the wrong side of `p >= t`): the upper value itself separates them.
    mids = np.where(mids > lo, mids, hi)
    candidates = np.unique(np.concatenate([mids, [bayes]]))
    costs = np.array([expected_cost(y, (p1 >= t).astype(np.int64), fp_cost, fn_cost) for t in candidates])
    best = np.flatnonzero(costs <= costs.min() + 1e-12)
    pick = best[np.argmin(np.abs(candidates[best] - bayes))]
    # Not rounded: probabilities closer than the rounding step (saturated float32 outputs near 0 or 1)
    # would land on the other side of it, and the stored threshold would no longer make this decision.
    return float(candidates[pick])


def contamination_threshold(p1: npt.NDArray[Any], contamination: float) -> float:
    """The smallest score among the top ``contamination`` share of these rows: flagging scores at or
    above it flags about that share (fewer when scores tie)."""
    return float(np.quantile(np.asarray(p1, dtype=np.float64), 1.0 - contamination, method="higher"))


def served_labels(proba: npt.NDArray[Any], threshold: float | None) -> npt.NDArray[np.int64]:
    """Labels the service will answer with: the same function the service applies."""
    return apply_threshold(proba, threshold)


def oriented(metric: str, value: float) -> float:
    """A value where higher is always better (for ranking and the Pareto front)."""
    return value if HIGHER_IS_BETTER[metric] else -value


def standard_error(metric: str, value: float, n: int) -> float:
    """Approximate standard error of a metric on n rows (binomial for accuracy, normal errors for RMSE)."""
    if n <= 1:
        return math.inf
    if metric == "accuracy":
        # A perfect score still has sampling error: never less than one error in n would give.
        return math.sqrt(max(value * (1 - value), 1.0 / n) / n)
    if metric == "rmse":
        return value / math.sqrt(2 * n)
    return 0.0


def pareto_front(points: Sequence[tuple[str, float, float]]) -> set[str]:
    """Names not dominated in (quality up, latency down); points are (name, quality, latency)."""
    front: set[str] = set()
    for name, q, lat in points:
        dominated = any(
            (q2 >= q and l2 <= lat) and (q2 > q or l2 < lat) for n2, q2, l2 in points if n2 != name
        )
        if not dominated:
            front.add(name)
    return front


@dataclass(frozen=True)
class Candidate:
    """What the champion rule looks at for one model."""

    name: str
    validation_score: float
    """The metric on the rows the rule judges (out-of-fold over train + validation in a build)."""
    latency_us: float
    eligible: bool
    size_bytes: int = 0
    """The ONNX file's size: among equally fast, equally good models the smaller (simpler) one wins."""
    correct: npt.NDArray[np.bool_] | None = None
    """Classification: per validation row, whether the served label is right (for paired errors)."""
    log_loss: npt.NDArray[np.float64] | None = None
    """Classification: per validation row, -log P(true class), P clipped at LOG_LOSS_FLOOR."""
    sq_error: npt.NDArray[np.float64] | None = None
    """Regression: per row, the squared error (for paired differences)."""
    vote_shares: bool = False
    """A hard vote's "probabilities" are vote shares (0 or 1 when members agree): judged on log loss,
    but never the log-loss reference others must approach."""


LATENCY_TOLERANCE = 1.5
"""Single-row latencies within this factor of the fastest are treated as equal (measurement noise)."""


LOG_LOSS_FLOOR = 1e-6
"""Probabilities below this count as this in per-row log loss: a hard vote's 0 would be infinite."""


def row_log_loss(proba: npt.NDArray[Any], y: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """-log P(true class) of each row."""
    p = np.asarray(proba, dtype=np.float64)[np.arange(len(y)), np.asarray(y, dtype=np.int64)]
    return -np.log(np.clip(p, LOG_LOSS_FLOOR, 1.0))


PAIRED_Z = 1.96
"""A cheaper model may trail the best by as much as the 95% interval of the paired difference allows."""


def _within_paired_noise(mine: npt.NDArray[Any], best: npt.NDArray[Any]) -> bool:
    """Whether the mean per-row loss of ``mine`` exceeds ``best``'s by no more than noise: within
    PAIRED_Z standard errors of the paired differences (the same rows, so the noise the two scores
    share cancels; a model right wherever the other is and on 11 more of 151 rows is clearly better,
    which one unpaired standard error of 0.04 could not tell)."""
    d = np.asarray(mine, dtype=np.float64) - np.asarray(best, dtype=np.float64)
    if len(d) < 2:
        return True
    se = float(np.std(d, ddof=1)) / math.sqrt(len(d))
    return float(d.mean()) <= PAIRED_Z * se + 1e-12


def _near_paired(pool: list[Candidate], rows: str, n: int) -> tuple[list[Candidate], str]:
    """Classification with per-row outcomes: within paired noise of the most accurate model on
    accuracy, and of the model with the lowest log loss on log loss."""
    wrong = {c.name: ~np.asarray(c.correct, dtype=np.bool_) for c in pool}
    loss = {c.name: np.asarray(c.log_loss, dtype=np.float64) for c in pool}
    best_acc = min(pool, key=lambda c: (float(wrong[c.name].mean()), c.name))
    reference = [c for c in pool if not c.vote_shares] or pool
    best_ll = min(reference, key=lambda c: (float(loss[c.name].mean()), c.name))
    on_acc = [c for c in pool if _within_paired_noise(wrong[c.name], wrong[best_acc.name])]
    both = [c for c in on_acc if _within_paired_noise(loss[c.name], loss[best_ll.name])]
    words = (
        f"whose {rows} accuracy over {n} rows trails the most accurate ({best_acc.name}: "
        f"{1 - float(wrong[best_acc.name].mean()):.4f}) and whose log loss trails the lowest "
        f"({best_ll.name}: {float(loss[best_ll.name].mean()):.4f}) by no more than the 95% interval of the "
        f"paired per-row differences allows ({PAIRED_Z:g} paired standard errors)"
    )
    if not both:  # no model is near the best on both: accuracy decides alone
        return on_acc, words + " (none was near on both: accuracy alone decided)"
    # A hard vote's shares are served as probabilities but are not any: near on log loss only because
    # the paired noise of its few confident misses is large (digits: 0.23 out-of-fold vs the stack's
    # 0.09, 0.30 on test), it stays a shadow whenever a model with real probabilities is near too.
    real = [c for c in both if not c.vote_shares]
    if real and len(real) < len(both):
        return real, words + "; a hard vote only when no model with probabilities is near"
    return both, words


def _near_paired_regression(pool: list[Candidate], rows: str, n: int) -> tuple[list[Candidate], str]:
    """Regression with per-row squared errors: within paired noise of the lowest mean squared error."""
    sq = {c.name: np.asarray(c.sq_error, dtype=np.float64) for c in pool}
    best = min(pool, key=lambda c: (float(sq[c.name].mean()), c.name))
    near = [c for c in pool if _within_paired_noise(sq[c.name], sq[best.name])]
    words = (
        f"whose {rows} squared error over {n} rows trails the lowest ({best.name}: RMSE "
        f"{math.sqrt(float(sq[best.name].mean())):.4f}) by no more than the 95% interval of the paired "
        f"per-row differences allows ({PAIRED_Z:g} paired standard errors)"
    )
    return near, words


def choose_champion(
    candidates: Sequence[Candidate], metric: str, n_rows: int, rows: str = "validation"
) -> tuple[str, str]:
    """One-standard-error rule: the fastest eligible model whose score is within one standard error of
    the best; with per-row outcomes, within the noise of the paired differences (accuracy and log loss
    for classification, squared error for regression): a cheaper model is preferred only at a cost
    the rows cannot tell from noise. ``rows`` names the rows judged, for the words. Returns (name, the
    rule in words)."""
    pool = [c for c in candidates if c.eligible]
    if not pool:
        raise ValueError("no eligible candidate for champion")
    best = max(pool, key=lambda c: oriented(metric, c.validation_score))
    se = standard_error(metric, best.validation_score, n_rows)
    cutoff = oriented(metric, best.validation_score) - se
    near = [c for c in pool if oriented(metric, c.validation_score) >= cutoff - 1e-12]
    closeness = (
        f"whose {rows} {metric} over {n_rows} rows is within one standard error ({se:.4f}) of the best "
        f"({best.name}: {best.validation_score:.4f})"
        if se > 0
        # no standard error for this metric (average precision): the best score, speed breaking ties
        else f"with the best {rows} {metric} over {n_rows} rows ({best.name}: {best.validation_score:.4f})"
    )
    if metric == "accuracy" and all(c.correct is not None and c.log_loss is not None for c in pool):
        near, closeness = _near_paired(pool, rows, n_rows)
    elif metric == "rmse" and all(c.sq_error is not None for c in pool):
        near, closeness = _near_paired_regression(pool, rows, n_rows)
    # Latency measured during a build is noisy (a busy machine shifts it by tens of percent): models
    # within LATENCY_TOLERANCE of the fastest count as equally fast, and among those the score
    # decides, then the smaller graph, then the name, so timing noise cannot change the champion.
    fastest = min(c.latency_us for c in near)
    fast = [c for c in near if c.latency_us <= fastest * LATENCY_TOLERANCE]
    champion = min(fast, key=lambda c: (-oriented(metric, c.validation_score), c.size_bytes, c.name))
    rule = (
        f"fastest model (ONNX single-row latency; within {LATENCY_TOLERANCE:g}x of the fastest counts as equally "
        f"fast, then the better {rows} score, then the smaller ONNX graph) {closeness}; baseline and "
        f"models that failed parity are not eligible"
    )
    return champion.name, rule
