"""ONNX export with skl2onnx (plain tensor outputs, one opset for all) and the parity check.

skl2onnx has no converter for scikit-learn's Dummy* baselines; we register small ones here: the
graph ignores its input's values and broadcasts the training prior (or mean) to every row.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from lightgbm import Booster, LGBMClassifier, LGBMRegressor
from lightgbm.basic import LightGBMError
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from builders import boosting
from builders.anomaly import neighbour_steps
from builders.text import check_convertible, pin_locale
from contract.manifest import NUMERIC_INPUT, ColumnSpec, ParityRecord

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
"""The same target opset for every graph (each declares the lowest version it needs, never more), so
members can later be upgraded to one opset and merged."""
PROBA_TOLERANCE = 1e-4
"""Largest allowed |P_onnx - P_sklearn|; float32 arithmetic stays well inside this except where noted."""
FAMILY_TOLERANCE = {"naive_bayes": 2e-2}
"""GaussianNB's float32 log-likelihoods differ by up to 1e-2 in probability on some data."""
REGRESSION_RTOL = 1e-4


def _zeros_column(scope: Any, container: Any, x_name: str) -> str:
    """A (N, 1) float tensor of zeros shaped like the input's rows."""
    first = scope.get_unique_variable_name("first_col")
    zero = scope.get_unique_variable_name("zero")
    out = scope.get_unique_variable_name("zeros")
    starts = scope.get_unique_variable_name("starts")
    ends = scope.get_unique_variable_name("ends")
    axes = scope.get_unique_variable_name("axes")
    container.add_initializer(starts, onnx.TensorProto.INT64, [1], [0])
    container.add_initializer(ends, onnx.TensorProto.INT64, [1], [1])
    container.add_initializer(axes, onnx.TensorProto.INT64, [1], [1])
    container.add_initializer(zero, onnx.TensorProto.FLOAT, [], [0.0])
    container.add_node(
        "Slice", [x_name, starts, ends, axes], first, name=scope.get_unique_operator_name("Slice")
    )
    container.add_node("Mul", [first, zero], out, name=scope.get_unique_operator_name("Mul"))
    return out


def _convert_dummy_classifier(scope: Any, operator: Any, container: Any) -> None:
    model: DummyClassifier = operator.raw_operator
    if model.strategy != "prior":
        raise NotImplementedError(f"DummyClassifier(strategy={model.strategy!r}): only 'prior' converts")
    prior = np.asarray(model.class_prior_, dtype=np.float32).reshape(1, -1)
    prior_name = scope.get_unique_variable_name("prior")
    container.add_initializer(prior_name, onnx.TensorProto.FLOAT, list(prior.shape), prior.ravel().tolist())
    zeros = _zeros_column(scope, container, operator.inputs[0].full_name)
    container.add_node(
        "Add", [zeros, prior_name], operator.outputs[1].full_name, name=scope.get_unique_operator_name("Add")
    )
    container.add_node(
        "ArgMax",
        [operator.outputs[1].full_name],
        operator.outputs[0].full_name,
        name=scope.get_unique_operator_name("ArgMax"),
        axis=1,
        keepdims=0,
    )


def _convert_dummy_regressor(scope: Any, operator: Any, container: Any) -> None:
    model: DummyRegressor = operator.raw_operator
    if model.strategy != "mean":
        raise NotImplementedError(f"DummyRegressor(strategy={model.strategy!r}): only 'mean' converts")
    const = np.asarray(model.constant_, dtype=np.float32).reshape(1, -1)
    name = scope.get_unique_variable_name("mean")
    container.add_initializer(name, onnx.TensorProto.FLOAT, list(const.shape), const.ravel().tolist())
    zeros = _zeros_column(scope, container, operator.inputs[0].full_name)
    container.add_node(
        "Add", [zeros, name], operator.outputs[0].full_name, name=scope.get_unique_operator_name("Add")
    )


update_registered_converter(
    DummyClassifier,
    "GatewayDummyClassifier",
    calculate_linear_classifier_output_shapes,
    _convert_dummy_classifier,
    options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
)
update_registered_converter(
    DummyRegressor,
    "GatewayDummyRegressor",
    calculate_linear_regressor_output_shapes,
    _convert_dummy_regressor,
)


# The boosting libraries' models convert with onnxmltools' converters, registered with skl2onnx so a
# pipeline (preprocessing + model) is still one graph and passes the same parity gate.
_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
update_registered_converter(
    LGBMClassifier,
    "LightGbmLGBMClassifier",
    calculate_linear_classifier_output_shapes,
    convert_lightgbm,
    options=_CLASSIFIER_OPTIONS,
)
update_registered_converter(
    LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes, convert_lightgbm
)
update_registered_converter(
    XGBClassifier,
    "XGBoostXGBClassifier",
    calculate_linear_classifier_output_shapes,
    convert_xgboost,
    options=_CLASSIFIER_OPTIONS,
)
update_registered_converter(
    XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
)


def initial_types(columns: Sequence[ColumnSpec]) -> list[tuple[str, Any]]:
    """The graph inputs (contract.feeds' layout): one [N, k] float32 input for the k numeric columns,
    then one [N, 1] string input per categorical or text column."""
    numeric = sum(1 for c in columns if c.kind == "numeric")
    types: list[tuple[str, Any]] = [(NUMERIC_INPUT, FloatTensorType([None, numeric]))] if numeric else []
    return types + [(c.tensor, StringTensorType([None, 1])) for c in columns if c.kind != "numeric"]


def _float32_threshold(text: str) -> str:
    """A LightGBM threshold line with every split value moved to the largest float32 at or below it.

    LightGBM compares ``x <= t`` in double precision; the ONNX tree ensemble compares in float32, so a
    threshold rounded up to a float32 that equals a data value sends that value the other way (measured:
    |dP| up to 8e-3 on wine). For a float32 input x, ``x <= t`` holds exactly when ``x <= f`` for f the
    largest float32 not above t, so the model with those thresholds answers every float32 row as before,
    and its ONNX graph exactly like it."""
    values = []
    for item in text.split():  # a single-leaf tree has no thresholds
        t = float(item)
        f = np.float32(t)
        if float(f) > t:
            f = np.nextafter(f, np.float32(-np.inf))
        values.append(repr(float(f)))
    return " ".join(values)


def float32_thresholds(model: BaseEstimator) -> None:
    """LightGBM steps of ``model`` (a pipeline or an estimator) rewritten with float32-exact split
    thresholds (see _float32_threshold), in place; trees with categorical splits are left alone."""
    steps = [s for _, s in getattr(model, "steps", [])] or [model]
    for step in steps:
        if not isinstance(step, LGBMClassifier | LGBMRegressor):
            continue
        text = step.booster_.model_to_string()
        if re.search(r"^num_cat=[1-9]", text, flags=re.M):
            continue
        # tree_sizes gives each tree's length in bytes, which the rewrite changes; without it LightGBM
        # reads the trees one after another
        text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)
        fixed = re.sub(
            r"^threshold=(.*)$", lambda m: "threshold=" + _float32_threshold(m.group(1)), text, flags=re.M
        )
        try:
            step._Booster = Booster(model_str=fixed)
        except LightGBMError:  # a format this rewrite does not know: the parity gate judges as is
            continue


def to_onnx(
    model: BaseEstimator, inputs: list[tuple[str, Any]], classifier: bool, name: str
) -> onnx.ModelProto:
    """Convert with plain tensor outputs (label + probabilities, or variable); an early-stopped
    boosting step converts as the plain estimator it refit (builders/boosting.py)."""
    if isinstance(model, Pipeline):
        model = Pipeline([(n, boosting.served(s)) for n, s in model.steps])
    else:
        model = boosting.served(model)
    float32_thresholds(model)
    check_convertible(model)
    with warnings.catch_warnings():
        # skl2onnx warns on every character n-gram vectoriser that only words are "fully supported";
        # builders/text.py says what converts exactly, and parity checks each export.
        warnings.filterwarnings("ignore", message="The conversion of CountVectorizer may not work")
        # skl2onnx 1.20 + protobuf 6 warn on HistGradientBoosting's boolean attributes; harmless, and
        # under warnings-as-errors it would silently exclude the family.
        warnings.filterwarnings(
            "ignore", message=".*Expected an int, got a boolean", category=DeprecationWarning
        )
        onx = _convert(model, inputs, classifier, name)
    return _check_outputs(drop_unused_initializers(pin_locale(onx)), classifier, name)


def drop_unused_initializers(onx: onnx.ModelProto) -> onnx.ModelProto:
    """Initializers no node reads, removed in place (skl2onnx's ComplementNB graph keeps its class
    prior unused, and onnxruntime warns about it at every load, in every worker)."""
    used: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            used.update(node.input)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)
        used.update(o.name for o in graph.output)

    visit(onx.graph)
    kept = [t for t in onx.graph.initializer if t.name in used]
    if len(kept) != len(onx.graph.initializer):
        del onx.graph.initializer[:]
        onx.graph.initializer.extend(kept)
    return onx


def converter_options(model: BaseEstimator, classifier: bool) -> dict[Any, dict[str, Any]]:
    """skl2onnx options: tensor outputs, and kNN through onnxruntime's CDist operator.

    The default kNN graph computes distances in a Scan loop: ~1 ms a row in onnxruntime, 30x any
    other member (and it dominated the cost of scoring every candidate live). With ``optim="cdist"``
    the same model costs ~30 µs and gives the same neighbours (CDist is an onnxruntime contrib op,
    which is the only runtime we serve with).
    """
    options: dict[Any, dict[str, Any]] = {}
    if classifier:
        options[id(model)] = {"zipmap": False}
    steps = [s for _, s in getattr(model, "steps", [])] or [model]
    for step in steps:
        if isinstance(step, KNeighborsClassifier | KNeighborsRegressor):
            options[id(step)] = {**options.get(id(step), {}), "optim": "cdist"}
            if classifier:
                options[id(step)]["zipmap"] = False
        for inner in neighbour_steps(step):
            options[id(inner)] = {"optim": "cdist"}
    return options


def _convert(
    model: BaseEstimator, inputs: list[tuple[str, Any]], classifier: bool, name: str
) -> onnx.ModelProto:
    options = converter_options(model, classifier)
    return convert_sklearn(
        model,
        name=name,
        initial_types=inputs,
        target_opset=TARGET_OPSET,
        options=options or None,
    )


def _check_outputs(onx: onnx.ModelProto, classifier: bool, name: str) -> onnx.ModelProto:
    outputs = [o.name for o in onx.graph.output]
    expected = ["label", "probabilities"] if classifier else ["variable"]
    if outputs != expected:
        raise ValueError(f"{name}: expected ONNX outputs {expected}, got {outputs}")
    onx.doc_string = f"ensemble-gateway {name}"
    return onx


def neighbour_tie_answers(
    model: BaseEstimator, x: Any, onnx_answer: npt.NDArray[Any], classifier: bool
) -> npt.NDArray[np.bool_]:
    """kNN pipelines: rows whose ONNX answer is one that a different choice among equally distant
    training rows gives (the k-th and later neighbours at the same distance: discrete columns make
    them common, and scikit-learn and onnxruntime break such ties differently). Other models: none.

    Classification: the ONNX class counts (probabilities x k) minus the strictly closer neighbours'
    counts must be a draw of the missing neighbours from the tied rows' classes. Regression: the ONNX
    sum of neighbour targets must lie between the smallest and largest such draw."""
    steps = [s for _, s in getattr(model, "steps", [])] or [model]
    knn = steps[-1]
    n = len(onnx_answer)
    if not isinstance(knn, KNeighborsClassifier | KNeighborsRegressor) or knn.weights != "uniform":
        return np.zeros(n, dtype=np.bool_)
    xt = model[:-1].transform(x) if len(steps) > 1 else x
    k = int(knn.n_neighbors)
    y = np.asarray(knn._y)
    out = np.zeros(n, dtype=np.bool_)
    for start in range(0, n, 256):  # distances to every training row, 256 test rows at a time
        stop = min(start + 256, n)
        dist = pairwise_distances(
            xt[start:stop], knn._fit_X, metric=knn.effective_metric_, **knn.effective_metric_params_
        )
        for i, d in zip(range(start, stop), dist, strict=True):
            kth = np.partition(d, k - 1)[k - 1]
            near, at = d < kth * (1 - 1e-5) - 1e-6, np.abs(d - kth) <= kth * 1e-5 + 1e-6
            out[i] = _valid_tie(y[near], y[at], k, onnx_answer[i], classifier)
    return out


def _valid_tie(
    strict: npt.NDArray[Any], tied: npt.NDArray[Any], k: int, answer: npt.NDArray[Any], classifier: bool
) -> bool:
    """Whether ``answer`` is what the strictly closer neighbours plus some of the tied ones give."""
    need = k - len(strict)
    if len(tied) <= need or need <= 0:
        return False  # no choice among tied rows: a difference is not a tie
    if classifier:
        counts = np.rint(np.asarray(answer, dtype=np.float64) * k).astype(np.int64)
        have = np.bincount(strict, minlength=len(counts))[: len(counts)]
        pool = np.bincount(tied, minlength=len(counts))[: len(counts)]
        draw = counts - have
        return bool((draw >= 0).all() and (draw <= pool).all() and draw.sum() == need)
    values = np.sort(tied.astype(np.float64))
    total = float(np.ravel(answer)[0]) * k - float(strict.sum())
    slack = 1e-4 * max(float(np.abs(values).max()), 1.0) * k
    return bool(values[:need].sum() - slack <= total <= values[-need:].sum() + slack)


def check_classifier_parity(
    sk_proba: npt.NDArray[Any],
    sk_label: npt.NDArray[Any],
    ort_proba: npt.NDArray[Any],
    ort_label: npt.NDArray[Any],
    tolerance: float,
    neighbour_ties: npt.NDArray[np.bool_] | None = None,
) -> ParityRecord:
    """Labels must agree except where scikit-learn's top two probabilities tie within ``tolerance``;
    rows in ``neighbour_ties`` (see neighbour_tie_answers) are counted, not judged."""
    judged = np.ones(len(sk_label), dtype=np.bool_) if neighbour_ties is None else ~neighbour_ties
    rows_diff = np.max(np.abs(sk_proba - ort_proba), axis=1) if sk_proba.size else np.zeros(0)
    explained = int(np.sum(~judged & (rows_diff > tolerance)))
    sk_proba, sk_label = sk_proba[judged], np.asarray(sk_label)[judged]
    ort_proba, ort_label = ort_proba[judged], np.asarray(ort_label)[judged]
    diff = float(np.max(np.abs(sk_proba - ort_proba))) if sk_proba.size else 0.0
    mismatch = np.asarray(sk_label) != np.asarray(ort_label)
    top2 = np.sort(sk_proba, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) <= tolerance
    ties = int(np.sum(mismatch & near_tie))
    bad = int(np.sum(mismatch & ~near_tie))
    passed = bad == 0 and diff <= tolerance
    reason = (
        ""
        if passed
        else (
            f"{bad} labels differ beyond ties" if bad else f"max |dP| {diff:.2e} > tolerance {tolerance:.0e}"
        )
    )
    return ParityRecord(
        rows=len(judged),
        passed=passed,
        tolerance=tolerance,
        label_mismatches=bad,
        tie_mismatches=ties,
        max_abs_diff=diff,
        neighbour_ties=explained,
        reason=reason,
    )


def check_regressor_parity(
    sk_pred: npt.NDArray[Any],
    ort_pred: npt.NDArray[Any],
    scale: float,
    neighbour_ties: npt.NDArray[np.bool_] | None = None,
) -> ParityRecord:
    """Predictions must agree within REGRESSION_RTOL of the target's scale (its standard deviation);
    rows in ``neighbour_ties`` are counted, not judged."""
    tolerance = REGRESSION_RTOL * max(scale, 1e-12)
    gaps = np.abs(np.ravel(sk_pred) - np.ravel(ort_pred))
    judged = np.ones(len(gaps), dtype=np.bool_) if neighbour_ties is None else ~neighbour_ties
    diff = float(np.max(gaps[judged])) if judged.any() else 0.0
    passed = diff <= tolerance
    return ParityRecord(
        rows=len(gaps),
        passed=passed,
        tolerance=tolerance,
        max_abs_diff=diff,
        neighbour_ties=int(np.sum(~judged & (gaps > tolerance))),
        reason="" if passed else f"max |dy| {diff:.3g} > tolerance {tolerance:.3g}",
    )
