"""What a model answers for a batch of rows, in one shape for builders (offline) and service (online)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Output:
    """One variant's (or member's) answer for a batch: class indices + probabilities, or values."""

    labels: npt.NDArray[np.int64] | None = None
    """Served class indices (decision threshold applied)."""
    proba: npt.NDArray[np.float64] | None = None
    values: npt.NDArray[np.float64] | None = None
    raw_labels: npt.NDArray[np.int64] | None = None
    """Members only: the graph's own label (argmax), which hard votes count."""


def slice_output(out: Output, start: int, stop: int) -> Output:
    """Rows [start, stop) of a batch output."""

    def cut(a: npt.NDArray[Any] | None) -> npt.NDArray[Any] | None:
        return None if a is None else a[start:stop]

    return Output(
        labels=cut(out.labels), proba=cut(out.proba), values=cut(out.values), raw_labels=cut(out.raw_labels)
    )


def concat_outputs(outs: list[Output]) -> Output:
    """One batch output from the outputs of consecutive requests."""

    def cat(arrays: list[npt.NDArray[Any] | None]) -> npt.NDArray[Any] | None:
        present = [a for a in arrays if a is not None]
        return np.concatenate(present) if len(present) == len(arrays) else None

    return Output(
        labels=cat([o.labels for o in outs]),
        proba=cat([o.proba for o in outs]),
        values=cat([o.values for o in outs]),
        raw_labels=cat([o.raw_labels for o in outs]),
    )


def from_graph(results: Sequence[Any], task: str, threshold: float | None = None) -> Output:
    """An Output from an ONNX graph's raw outputs: [label, probabilities] for classifiers (the label
    kept as ``raw_labels``; ``labels`` with the decision threshold applied), [variable] for regressors."""
    if task == "regression":
        return Output(values=np.asarray(results[0], dtype=np.float64).reshape(-1))
    label, proba = results[0], results[1]
    raw = np.asarray(label, dtype=np.int64).reshape(-1)
    p = np.asarray(proba, dtype=np.float64)
    if threshold is None or p.shape[1] != 2:
        return Output(labels=raw, proba=p, raw_labels=raw)
    # The binary decision (class 1 when P(class 1) >= threshold), as contract.combine.apply_threshold.
    return Output(labels=(p[:, 1] >= threshold).astype(np.int64), proba=p, raw_labels=raw)
