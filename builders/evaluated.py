"""What the build knows about each model it evaluated (typed, member or ensemble), how that becomes the
model's card, and the facts the report needs beyond the models themselves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy.typing as npt
import onnxruntime as ort
from sklearn.pipeline import Pipeline

from contract.manifest import (
    AccuracyEstimator,
    DatasetFingerprint,
    LatencyRecord,
    LearningPoint,
    ModelCard,
    ParityRecord,
    SearchRecord,
    Strategy,
)
from contract.outputs import Output

Role = Literal["baseline", "simplest", ""]


@dataclass
class Evaluated:
    """One model (member, ensemble or stacking meta-model) with its served outputs and card material."""

    name: str
    kind: Literal["member", "ensemble"]
    family: str
    description: str
    role: Role = ""
    """baseline (the dummy), simplest (the model every gain is measured against), or neither."""
    outputs: dict[str, Output] = field(default_factory=dict)
    """split ("validation", "test") -> the served outputs (decision threshold applied)."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    search: SearchRecord | None = None
    latency: LatencyRecord | None = None
    parity: ParityRecord | None = None
    learning_curve: list[LearningPoint] = field(default_factory=list)
    still_improving: bool | None = None
    training_seconds: float = 0.0
    strategy: Strategy | None = None
    members: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    threshold: float | None = None
    onnx_bytes: bytes | None = None
    session: ort.InferenceSession | None = None
    pipeline: Pipeline | None = None
    trained_on: str = "train"
    """Rows the served model was fitted on: "train", or "train+validation" after the refit."""
    excluded: str = ""
    """Why the model is left out of the repository (export or parity failed); empty when it is in."""

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.onnx_bytes).hexdigest() if self.onnx_bytes is not None else None

    def card(
        self,
        dataset: DatasetFingerprint,
        versions: dict[str, str],
        metric: str,
        estimator: AccuracyEstimator | None = None,
    ) -> ModelCard:
        """The model card the repository stores (metrics rounded to 6 digits)."""
        return ModelCard(
            name=self.name,
            kind=self.kind,
            family=self.family,
            description=self.description,
            hyperparameters=self.hyperparameters,
            search=self.search,
            metrics={s: {k: round(v, 6) for k, v in d.items()} for s, d in self.metrics.items()},
            primary_metric=metric,
            latency=self.latency,
            file_size_bytes=len(self.onnx_bytes) if self.onnx_bytes is not None else 0,
            training_seconds=self.training_seconds,
            parity=self.parity,
            sha256=self.sha256,
            dataset=dataset,
            library_versions=versions,
            decision_threshold=self.threshold,
            learning_curve=self.learning_curve,
            still_improving=self.still_improving,
            members=self.members,
            strategy=self.strategy,
            weights=self.weights,
            accuracy_estimator=estimator,
            trained_on=self.trained_on,
        )


@dataclass(frozen=True)
class Matrix:
    """A square table between named models (error correlation, disagreement)."""

    names: list[str]
    matrix: list[list[float]]


@dataclass(frozen=True)
class VoteIndependence:
    """What the vote would reach if its members erred independently, next to what it measured."""

    members: list[str]
    member_accuracies: list[float]
    independent_accuracy: float
    measured_accuracy: float


@dataclass
class ReportFacts:
    """What the report shows beyond the models: splits, diversity, the champion and its rule."""

    split_rows: dict[str, int]
    y_test: npt.NDArray[Any]
    costs: tuple[float, float] | None = None
    error_correlation: Matrix | None = None
    disagreement: Matrix | None = None
    ensemble_members: list[str] = field(default_factory=list)
    ensemble_rule: str = ""
    vote_independence: VoteIndependence | None = None
    champion: str = ""
    baseline: str = ""
    simplest: str | None = None
