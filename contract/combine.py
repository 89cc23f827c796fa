"""Ensemble combiners over member outputs, shared by builders (offline) and the service (online).

:func:`combine` is the one dispatch both sides call: a strategy and the members' outputs in, the
ensemble's output out. Exact semantics, matching scikit-learn's VotingClassifier / VotingRegressor /
StackingClassifier:

- hard vote: weighted count of member labels per class, then argmax; ties go to the lowest class index;
- soft average: weighted mean of member probabilities, then argmax (ties to the lowest index);
- mean: weighted mean of member regression outputs;
- stack features: for binary tasks each member contributes P(class 1) only (scikit-learn drops the
  first probability column); otherwise every probability column, members in manifest order.

numpy only: the serving image must not need scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.manifest import Strategy, Task
from contract.outputs import Output, from_graph

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]


def _weights(weights: Sequence[float] | None, n_members: int) -> npt.NDArray[np.float64]:
    if weights is None:
        return np.ones(n_members, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_members,):
        raise ValueError(f"expected {n_members} weights, got {w.size}")
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w


def hard_vote(
    labels: Sequence[Any] | IntArray, n_classes: int, weights: Sequence[float] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Weighted majority vote over class indices.

    ``labels`` is (members, rows) of class indices. Returns the winning index per row and the
    weighted vote share per class, (rows, n_classes), which sums to 1 per row.
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim != 2:
        raise ValueError(f"expected labels of shape (members, rows), got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
        raise ValueError(f"labels must be class indices in [0, {n_classes}), got {lab.min()}..{lab.max()}")
    w = _weights(weights, lab.shape[0])
    counts = np.zeros((lab.shape[1], n_classes), dtype=np.float64)
    rows = np.arange(lab.shape[1])
    for member_labels, weight in zip(lab, w, strict=True):
        np.add.at(counts, (rows, member_labels), weight)
    # np.argmax returns the first maximum: the lowest class index wins a tie, as in scikit-learn.
    return counts.argmax(axis=1).astype(np.int64), counts / w.sum()


def soft_average(
    probabilities: Sequence[Any] | FloatArray, weights: Sequence[float] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Weighted mean of member probabilities, (members, rows, classes) -> (labels, probabilities)."""
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim != 3:
        raise ValueError(f"expected probabilities of shape (members, rows, classes), got {proba.shape}")
    w = _weights(weights, proba.shape[0])
    # np.average (as VotingClassifier) adds members element by element, so equal probabilities stay
    # exactly equal and ties go to the lowest index; a BLAS tensordot rounds differently by position.
    avg = np.average(proba, axis=0, weights=w)
    return avg.argmax(axis=1).astype(np.int64), avg


def mean(values: Sequence[Any] | FloatArray, weights: Sequence[float] | None = None) -> FloatArray:
    """Weighted mean of member regression outputs, (members, rows) -> (rows,)."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 3 and vals.shape[2] == 1:
        vals = vals[:, :, 0]
    if vals.ndim != 2:
        raise ValueError(f"expected values of shape (members, rows), got {vals.shape}")
    w = _weights(weights, vals.shape[0])
    return np.tensordot(w / w.sum(), vals, axes=1)


def stack_features(outputs: Sequence[Any] | FloatArray, task: str) -> npt.NDArray[np.float32]:
    """The meta-model's input: member outputs side by side, (rows, features), float32.

    ``outputs`` is (members, rows, classes) of probabilities for classification, or
    (members, rows) of predictions for regression.
    """
    out = np.asarray(outputs, dtype=np.float64)
    if task == "regression":
        if out.ndim == 3 and out.shape[2] == 1:
            out = out[:, :, 0]
        if out.ndim != 2:
            raise ValueError(f"expected outputs of shape (members, rows), got {out.shape}")
        return np.ascontiguousarray(out.T, dtype=np.float32)
    if out.ndim != 3:
        raise ValueError(f"expected outputs of shape (members, rows, classes), got {out.shape}")
    if task == "binary":
        out = out[:, :, 1:]
    # (members, rows, k) -> (rows, members * k), member-major as scikit-learn's np.concatenate.
    return np.ascontiguousarray(np.concatenate(list(out), axis=1), dtype=np.float32)


def apply_threshold(probabilities: FloatArray, threshold: float | None) -> npt.NDArray[np.int64]:
    """Binary decision: class 1 when P(class 1) >= threshold; argmax when no threshold was chosen."""
    proba = np.asarray(probabilities)
    if threshold is None or proba.shape[1] != 2:
        return proba.argmax(axis=1).astype(np.int64)
    return (proba[:, 1] >= threshold).astype(np.int64)


MetaModel = Callable[[npt.NDArray[np.float32]], Sequence[Any]]
"""Runs a stacking meta-model on its features and returns the graph's raw outputs ([label,
probabilities], or [variable]): an onnxruntime session's ``run`` in practice, timed by the service."""


def combine(
    strategy: Strategy,
    members: Sequence[Output],
    *,
    task: Task,
    n_classes: int,
    weights: Sequence[float] | None = None,
    threshold: float | None = None,
    meta: MetaModel | None = None,
) -> Output:
    """An ensemble's output from its members' outputs (members in manifest order).

    A binary decision threshold applies to soft averages and stacking (their probabilities are what a
    threshold was chosen on); a hard vote's shares are counts, not probabilities, and take none."""
    if task == "regression":
        values = [m.values for m in members]
        if strategy == "stack":
            if meta is None:
                raise ValueError("stack: expected a meta-model")
            return from_graph(meta(stack_features(values, task)), task)
        if strategy != "mean":
            raise ValueError(f"regression: expected strategy 'mean' or 'stack', got {strategy!r}")
        return Output(values=np.asarray(mean(values, weights), dtype=np.float64))
    if strategy == "hard_vote":
        labels, shares = hard_vote(
            [m.raw_labels if m.raw_labels is not None else m.labels for m in members], n_classes, weights
        )
        return Output(labels=labels, proba=shares)
    if strategy == "stack":
        if meta is None:
            raise ValueError("stack: expected a meta-model")
        return from_graph(meta(stack_features([m.proba for m in members], task)), task, threshold)
    if strategy != "soft_average":
        raise ValueError(
            f"{task}: expected strategy 'hard_vote', 'soft_average' or 'stack', got {strategy!r}"
        )
    _, proba = soft_average([m.proba for m in members], weights)
    return Output(labels=apply_threshold(proba, threshold), proba=proba)
