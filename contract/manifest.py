"""The model repository contract: one pydantic schema that builders write and the service reads.

A repository root holds ``repository.json`` and one folder per model name; each build is a new
integer version folder::

    <root>/repository.json
    <root>/<name>/<version>/manifest.json
    <root>/<name>/<version>/members/<member>/model.onnx + card.json
    <root>/<name>/<version>/ensembles/<ensemble>/card.json [+ meta.onnx for stacking]
    <root>/<name>/<version>/report.md, report.html, plots/*.png

This module imports pydantic only, so the serving image never needs scikit-learn.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 2
"""2: every numeric column is one column of a single [N, k] float input (1 had one input per column)."""
NUMERIC_INPUT = "numeric"
"""The ONNX input holding every numeric column, in manifest order; no column tensor may take this name."""
MANIFEST_FILE = "manifest.json"
ROOT_MARKER = "repository.json"
CARD_FILE = "card.json"

Task = Literal["binary", "multiclass", "regression"]
ClassLabel = str | int | float | bool
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Strategy = Literal["hard_vote", "soft_average", "mean", "stack"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """One raw input column. Numeric columns are the columns, in manifest order, of one [N, k] float
    input named NUMERIC_INPUT; each categorical or text column is its own [N, 1] string input."""

    name: str
    """The column name clients use in their records."""
    tensor: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """A sanitised form of ``name``: the ONNX input of a string column, the training column name of
    any column."""
    kind: Literal["numeric", "categorical", "text"]
    """numeric columns are float32 tensors; categorical and text ones string tensors ("" means missing).
    A text column is free text that the graphs tokenise themselves (TF-IDF inside the graph)."""
    categories: list[str] = []
    """Categories seen in training (unknown ones are accepted and ignored by the one-hot encoder)."""
    missing_in_training: int = 0
    """How many training rows had this column missing; missing values are always accepted."""


class DroppedColumn(_Strict):
    """A column of the input table that the build left out, and why."""

    name: str
    reason: str


class DatasetFingerprint(_Strict):
    """What the repository was trained on."""

    source: str
    sha256: Sha256
    rows: int
    columns: int
    target: str


class SearchRecord(_Strict):
    """The hyper-parameter search budget a family was given and what it spent."""

    budget_trials: int
    trials_run: int
    cv_folds: int
    seed: int
    seconds: float
    best_cv_score: float | None = None
    scoring: str = ""
    budget_seconds: float | None = None
    """With a time budget: this family's share of it (trials then run until it is spent)."""
    strategy: str = "random"
    """"random" (seeded random trials), or "halving" (successive halving over 3x the trials)."""


class ParityRecord(_Strict):
    """The numeric check of an ONNX export against its scikit-learn original on held-out rows."""

    rows: int
    passed: bool
    tolerance: float
    label_mismatches: int = 0
    """Mismatched labels not explained by a probability tie within ``tolerance``."""
    tie_mismatches: int = 0
    """Mismatched labels on rows whose top two probabilities are within ``tolerance`` (allowed)."""
    max_abs_diff: float = 0.0
    """Largest |P_onnx - P_sklearn| (or |dy|) over the rows judged (neighbour-tie rows excepted)."""
    neighbour_ties: int = 0
    """kNN: rows whose answers differ only in which of several equally distant training rows count as
    the k nearest; allowed when the ONNX answer is one that a tie-break could give."""
    reason: str = ""


class LatencyRecord(_Strict):
    """Inference cost measured in onnxruntime (and scikit-learn for comparison) on this machine."""

    onnx_single_row_us: float
    onnx_batch_row_us: float
    """Per-row cost of a 64-row batch."""
    sklearn_single_row_us: float | None = None


class LearningPoint(_Strict):
    """Cross-validated score at one training-set size."""

    train_rows: int
    score: float
    score_std: float


class AccuracyEstimator(_Strict):
    """Confidence-based performance estimation (contract/estimation.py): an isotonic map from the
    confidence of the served label to the probability that it is right, fitted on the validation
    split's served outputs at build time, so the service can estimate accuracy before labels arrive."""

    confidence: list[float]
    """Ascending confidences of the map's steps (linear between them, clipped beyond the ends)."""
    correct: list[float]
    """P(served label is right) at each of those confidences (non-decreasing)."""
    rows: int = Field(gt=0)
    """Validation rows it was fitted on (the estimate's interval widens with fewer)."""
    accuracy: float
    """Validation accuracy of the served labels (the map's mean over those rows)."""

    @model_validator(mode="after")
    def _steps(self) -> AccuracyEstimator:
        if not self.confidence or len(self.confidence) != len(self.correct):
            raise ValueError("confidence and correct must be non-empty lists of the same length")
        return self


class ModelCard(_Strict):
    """Everything a user needs to judge one member, ensemble or meta-model."""

    name: Name
    kind: Literal["member", "ensemble"]
    family: str
    description: str = ""
    hyperparameters: dict[str, Any] = {}
    search: SearchRecord | None = None
    metrics: dict[str, dict[str, float]] = {}
    """Metrics per split ("validation", "test"), computed from the served (ONNX) outputs; builds since
    out-of-fold scoring also carry "out_of_fold" (the configuration cross-validated over train +
    validation, what the champion rule judges)."""
    primary_metric: str
    latency: LatencyRecord | None = None
    file_size_bytes: int = 0
    training_seconds: float = 0.0
    parity: ParityRecord | None = None
    sha256: Sha256 | None = None
    dataset: DatasetFingerprint
    library_versions: dict[str, str] = {}
    decision_threshold: float | None = None
    """Binary tasks: predict the positive class when its probability is >= this (chosen by FP/FN cost)."""
    learning_curve: list[LearningPoint] = []
    still_improving: bool | None = None
    members: list[str] = []
    strategy: Strategy | None = None
    weights: list[float] | None = None
    trained_on: str = "train"
    """Members: the rows the served graph was fitted on ("train", or "train+validation" when the build
    refit the chosen configuration on both); validation metrics always come from the train-only fit."""
    accuracy_estimator: AccuracyEstimator | None = None
    """Classification: the map that estimates live accuracy on rows without labels (absent in
    repositories built before it existed, and for regression)."""


class MemberSpec(_Strict):
    """A single ONNX model served by the gateway."""

    name: Name
    family: str
    path: str
    card: str
    sha256: Sha256
    outputs: list[str]
    """Tensor outputs: ["label", "probabilities"] for classifiers, ["variable"] for regressors."""


class EnsembleSpec(_Strict):
    """A combiner over members, computed at inference time from the members' outputs."""

    name: Name
    strategy: Strategy
    members: list[Name]
    weights: list[float] | None = None
    meta_model: str | None = None
    """Stacking only: ONNX meta-model whose single input is the members' stacked outputs."""
    meta_sha256: Sha256 | None = None
    card: str

    @model_validator(mode="after")
    def _check(self) -> EnsembleSpec:
        if len(self.members) < 2:
            raise ValueError(f"ensemble {self.name!r}: expected at least 2 members, got {len(self.members)}")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"ensemble {self.name!r}: duplicate members {self.members}")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(
                f"ensemble {self.name!r}: expected {len(self.members)} weights, got {len(self.weights)}"
            )
        if self.weights is not None and (min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError(f"ensemble {self.name!r}: weights must be >= 0 with a positive sum")
        if (self.strategy == "stack") != (self.meta_model is not None):
            raise ValueError(f"ensemble {self.name!r}: a meta_model is required for, and only for, stack")
        if self.meta_model is not None and self.meta_sha256 is None:
            raise ValueError(f"ensemble {self.name!r}: meta_model needs meta_sha256")
        return self


class Routing(_Strict):
    """Who answers: a champion, A/B challengers (sticky by routing key), and shadow variants."""

    champion: Name
    challengers: dict[Name, Annotated[float, Field(gt=0, le=1)]] = {}
    """Share of traffic each challenger answers; the champion answers the rest."""
    shadow: list[Name] = []
    shadow_fraction: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Share of requests (hash-sampled by request id) on which shadow variants also run."""
    rule: str = ""

    @model_validator(mode="after")
    def _check(self) -> Routing:
        if sum(self.challengers.values()) >= 1.0:
            raise ValueError("routing: challenger weights must sum to less than 1")
        if self.champion in self.challengers:
            raise ValueError(f"routing: champion {self.champion!r} cannot also be a challenger")
        return self


class Manifest(_Strict):
    """The whole repository version: schema, members, ensembles, routing, provenance."""

    format_version: Literal[2] = 2
    name: Name
    version: int
    created_at: str
    task: Task
    target: str
    inputs: list[ColumnSpec]
    dropped_columns: list[DroppedColumn] = []
    classes: list[ClassLabel] = []
    """Class labels in index order; ONNX label outputs are indices into this list."""
    primary_metric: str
    members: list[MemberSpec]
    ensembles: list[EnsembleSpec] = []
    routing: Routing
    dataset: DatasetFingerprint
    library_versions: dict[str, str] = {}
    files: dict[str, Sha256] = {}
    """sha256 of every file in the version folder except this manifest."""
    opset: dict[str, int] = {}

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        names = [m.name for m in self.members] + [e.name for e in self.ensembles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {dupes}")
        member_names = {m.name for m in self.members}
        for ens in self.ensembles:
            unknown = [m for m in ens.members if m not in member_names]
            if unknown:
                raise ValueError(f"ensemble {ens.name!r}: unknown members {unknown}")
        known = set(names)
        routed = [self.routing.champion, *self.routing.challengers, *self.routing.shadow]
        unknown_routed = [r for r in routed if r not in known]
        if unknown_routed:
            raise ValueError(f"routing names unknown variants {unknown_routed}; known: {sorted(known)}")
        if self.task != "regression" and len(self.classes) < 2:
            raise ValueError(f"task {self.task!r}: expected at least 2 classes, got {len(self.classes)}")
        if not self.inputs:
            raise ValueError("inputs: expected at least one column")
        tensors = [c.tensor for c in self.inputs]
        if NUMERIC_INPUT in tensors or len(set(tensors)) != len(tensors):
            raise ValueError(f"inputs: tensor names must be unique and not {NUMERIC_INPUT!r}")
        kinds = [c.kind for c in self.inputs]
        if kinds != sorted(kinds, key=lambda k: k != "numeric"):
            raise ValueError("inputs: numeric columns must come before string (categorical, text) ones")
        return self

    @model_validator(mode="before")
    @classmethod
    def _format(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format_version") == 1:
            raise ValueError(
                "format_version 1 (one ONNX input per column) is no longer served: rebuild the "
                "repository with `gateway build`"
            )
        return data

    def onnx_inputs(self) -> dict[str, tuple[str, int]]:
        """ONNX input name -> (kind, width) that every member graph takes."""
        numeric = sum(1 for c in self.inputs if c.kind == "numeric")
        out = {NUMERIC_INPUT: ("numeric", numeric)} if numeric else {}
        out.update({c.tensor: (c.kind, 1) for c in self.inputs if c.kind != "numeric"})
        return out

    def variant_names(self) -> list[str]:
        """Every servable name: members then ensembles."""
        return [m.name for m in self.members] + [e.name for e in self.ensembles]
