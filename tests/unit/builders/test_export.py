"""ONNX export: every family's pipeline, run in onnxruntime on raw mixed rows, against scikit-learn.

The table has numeric and text columns with missing values and a colour the models never saw in
training; ONNX gets the rows as a client sends them (None for missing), through contract.feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from skl2onnx.common.data_types import FloatTensorType
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.pipeline import Pipeline

from builders.data import Table, prepare
from builders.export import (
    FAMILY_TOLERANCE,
    PROBA_TOLERANCE,
    TARGET_OPSET,
    check_classifier_parity,
    check_regressor_parity,
    initial_types,
    to_onnx,
)
from builders.families import CLASSIFIERS, REGRESSORS, Family
from builders.preprocess import make_pipeline
from contract.feeds import make_feeds
from contract.manifest import NUMERIC_INPUT
from tests.helpers import PROVIDERS, mixed_frame

TRAIN_ROWS = 180
TARGETS = ("label", "grade", "amount")


@dataclass(frozen=True)
class Case:
    """One target of the mixed table, prepared, split, and ready to feed."""

    table: Table
    raw_test: pd.DataFrame
    """Test rows as raw values (None / NaN for missing), keyed by the original column names."""

    @property
    def x_train(self) -> pd.DataFrame:
        return self.table.features.iloc[:TRAIN_ROWS]

    @property
    def y_train(self) -> npt.NDArray[Any]:
        return self.table.y[:TRAIN_ROWS]

    @property
    def x_test(self) -> pd.DataFrame:
        return self.table.features.iloc[TRAIN_ROWS:]

    def feeds(self) -> dict[str, npt.NDArray[Any]]:
        records = {c.name: self.raw_test[c.name].tolist() for c in self.table.columns}
        return make_feeds(self.table.columns, records)


def _case(target: str) -> Case:
    frame = mixed_frame()
    table = prepare(
        frame.drop(columns=[t for t in TARGETS if t != target]), target, "auto", "t", "t", "0" * 64
    )
    return Case(table=table, raw_test=frame.iloc[TRAIN_ROWS:])


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {t: _case(t) for t in TARGETS}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=PROVIDERS)


def _fit(family: Family, case: Case) -> Pipeline:
    return make_pipeline(family, case.table.columns, seed=0).fit(case.x_train, case.y_train)


def test_the_test_rows_exercise_missing_and_unseen_values(cases: dict[str, Case]) -> None:
    raw = cases["label"].raw_test
    assert raw["colour"].isna().any()
    assert raw["mean radius"].isna().any()
    assert (raw["colour"] == "purple").any()
    assert "purple" not in set(cases["label"].x_train["colour"])


def test_inputs_are_one_numeric_matrix_and_one_string_column_per_category(cases: dict[str, Case]) -> None:
    case = cases["label"]
    onx = to_onnx(_fit(CLASSIFIERS[1], case), initial_types(case.table.columns), True, "logreg")
    inputs = {i.name: i.type.tensor_type for i in onx.graph.input}
    assert list(inputs) == [NUMERIC_INPUT, "colour", "size"]
    assert inputs[NUMERIC_INPUT].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inputs[NUMERIC_INPUT].shape.dim][1:] == [2]  # mean radius, width (cm)
    for name in ("colour", "size"):
        assert inputs[name].elem_type == onnx.TensorProto.STRING
        assert [d.dim_value for d in inputs[name].shape.dim][1:] == [1]
    # TARGET_OPSET is a ceiling: skl2onnx stamps each domain with the newest version it needed.
    opsets = {o.domain: o.version for o in onx.opset_import}
    assert opsets[""] == TARGET_OPSET[""]
    assert all(v <= TARGET_OPSET[d] for d, v in opsets.items())


@pytest.mark.parametrize("target", ["label", "grade"])
@pytest.mark.parametrize("family", CLASSIFIERS, ids=lambda f: f.name)
def test_classifier_export_matches_scikit_learn(cases: dict[str, Case], target: str, family: Family) -> None:
    case = cases[target]
    pipeline = _fit(family, case)
    onx = to_onnx(pipeline, initial_types(case.table.columns), True, family.name)
    assert [o.name for o in onx.graph.output] == ["label", "probabilities"]

    label, proba = _session(onx).run(["label", "probabilities"], case.feeds())

    tolerance = FAMILY_TOLERANCE.get(family.name, PROBA_TOLERANCE)
    parity = check_classifier_parity(
        pipeline.predict_proba(case.x_test), pipeline.predict(case.x_test), proba, label, tolerance
    )
    assert parity.passed, parity.reason
    assert parity.rows == len(case.x_test)
    assert proba.shape == (len(case.x_test), len(case.table.classes))
    # Labels are class indices (the manifest maps them to class names).
    assert set(np.unique(label)) <= set(range(len(case.table.classes)))


@pytest.mark.parametrize("family", REGRESSORS, ids=lambda f: f.name)
def test_regressor_export_matches_scikit_learn(cases: dict[str, Case], family: Family) -> None:
    case = cases["amount"]
    pipeline = _fit(family, case)
    onx = to_onnx(pipeline, initial_types(case.table.columns), False, family.name)
    assert [o.name for o in onx.graph.output] == ["variable"]

    (pred,) = _session(onx).run(["variable"], case.feeds())

    parity = check_regressor_parity(pipeline.predict(case.x_test), pred, float(np.std(case.y_train)))
    assert parity.passed, parity.reason
    assert pred.shape == (len(case.x_test), 1)


@pytest.mark.parametrize("target", ["label", "amount"])
def test_knn_computes_distances_with_cdist_not_a_scan_loop(cases: dict[str, Case], target: str) -> None:
    # The Scan-loop graph cost ~1 ms a row (30x any other member) and dominated live scoring.
    case = cases[target]
    classifier = target != "amount"
    family = next(f for f in (CLASSIFIERS if classifier else REGRESSORS) if f.name == "knn")
    onx = to_onnx(_fit(family, case), initial_types(case.table.columns), classifier, "knn")
    ops = {n.op_type for n in onx.graph.node}
    assert "CDist" in ops
    assert "Scan" not in ops
    _session(onx).run(None, case.feeds())


def test_dummy_classifier_converts_to_its_prior(cases: dict[str, Case]) -> None:
    case = cases["grade"]
    pipeline = _fit(CLASSIFIERS[0], case)
    model: DummyClassifier = pipeline.named_steps["model"]
    label, proba = _session(to_onnx(pipeline, initial_types(case.table.columns), True, "dummy")).run(
        None, case.feeds()
    )
    prior = np.bincount(case.y_train, minlength=3) / len(case.y_train)
    np.testing.assert_allclose(model.class_prior_, prior)
    np.testing.assert_allclose(proba, np.tile(prior, (len(case.x_test), 1)), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(label, np.full(len(case.x_test), prior.argmax()))


def test_dummy_regressor_converts_to_its_mean(cases: dict[str, Case]) -> None:
    case = cases["amount"]
    pipeline = _fit(REGRESSORS[0], case)
    (pred,) = _session(to_onnx(pipeline, initial_types(case.table.columns), False, "dummy")).run(
        None, case.feeds()
    )
    np.testing.assert_allclose(pred, np.full((len(case.x_test), 1), case.y_train.mean()), rtol=1e-6)


def test_dummy_converters_refuse_other_strategies(cases: dict[str, Case]) -> None:
    case = cases["label"]
    x = case.x_train[["mean_radius"]].fillna(0.0).to_numpy()
    inputs = initial_types([c for c in case.table.columns if c.tensor == "mean_radius"])
    classifier = DummyClassifier(strategy="most_frequent").fit(x, case.y_train)
    with pytest.raises(NotImplementedError, match=r"strategy='most_frequent'\): only 'prior' converts"):
        to_onnx(classifier, inputs, True, "dummy")
    regressor = DummyRegressor(strategy="median").fit(x, case.y_train.astype(float))
    with pytest.raises(NotImplementedError, match=r"strategy='median'\): only 'mean' converts"):
        to_onnx(regressor, inputs, False, "dummy")


# --- the parity check itself ---------------------------------------------------------------------

SK_PROBA = np.array([[0.9, 0.1], [0.2, 0.8], [0.50002, 0.49998], [0.3, 0.7]])
SK_LABEL = np.array([0, 1, 0, 1])


def test_parity_passes_on_identical_outputs() -> None:
    record = check_classifier_parity(SK_PROBA, SK_LABEL, SK_PROBA.astype(np.float32), SK_LABEL, 1e-4)
    assert record.passed
    assert (record.label_mismatches, record.tie_mismatches, record.reason) == (0, 0, "")
    assert record.rows == 4


def test_parity_tolerates_a_label_flip_on_a_probability_tie() -> None:
    ort_proba = SK_PROBA.copy()
    ort_proba[2] = [0.49999, 0.50001]  # within 1e-4 of scikit-learn's, and now on the other side
    ort_label = np.array([0, 1, 1, 1])
    record = check_classifier_parity(SK_PROBA, SK_LABEL, ort_proba, ort_label, 1e-4)
    assert record.passed
    assert record.tie_mismatches == 1
    assert record.label_mismatches == 0


def test_parity_flags_a_real_label_mismatch() -> None:
    ort_label = np.array([0, 0, 0, 1])  # row 1 has P = 0.8 for class 1: no tie explains class 0
    record = check_classifier_parity(SK_PROBA, SK_LABEL, SK_PROBA, ort_label, 1e-4)
    assert not record.passed
    assert record.label_mismatches == 1
    assert record.reason == "1 labels differ beyond ties"


def test_parity_flags_probabilities_beyond_tolerance() -> None:
    ort_proba = SK_PROBA.copy()
    ort_proba[0] = [0.8, 0.2]
    record = check_classifier_parity(SK_PROBA, SK_LABEL, ort_proba, SK_LABEL, 1e-4)
    assert not record.passed
    assert record.max_abs_diff == pytest.approx(0.1)
    assert record.reason.startswith("max |dP| 1.00e-01 > tolerance")


def test_regressor_parity_scales_its_tolerance_with_the_target() -> None:
    truth = np.array([100.0, 200.0, 300.0])
    assert check_regressor_parity(truth, (truth + 0.004).reshape(-1, 1), scale=50.0).passed
    record = check_regressor_parity(truth, (truth + 0.006).reshape(-1, 1), scale=50.0)
    assert not record.passed
    assert record.tolerance == pytest.approx(0.005)
    assert record.reason.startswith("max |dy| 0.006 > tolerance 0.005")


def test_lightgbm_thresholds_become_float32_exact_without_changing_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LightGBM splits halfway between two training values in double precision; rounded to float32 by
    the ONNX tree ensemble, such a threshold can equal a data value and flip its branch. Two adjacent
    float32 values whose midpoint rounds up to the upper one: without the rewrite the graph answers
    the upper value's rows wrongly; with it, every row as LightGBM does."""
    import builders.export as export
    from builders.families import CLASSIFIERS

    rng = np.random.default_rng(0)
    low = np.nextafter(np.float32(1.0), np.float32(2.0))
    high = np.nextafter(low, np.float32(2.0))
    assert np.float32((float(low) + float(high)) / 2) == high
    upper = rng.integers(0, 2, 400)
    x = np.column_stack([np.where(upper == 1, high, low), rng.normal(size=400)]).astype(np.float32)
    family = next(f for f in CLASSIFIERS if f.name == "lightgbm")
    inputs = [(NUMERIC_INPUT, FloatTensorType([None, 2]))]

    def graph_error(rewrite: bool) -> float:
        model = family.make(0).estimator.set_params(n_estimators=20, min_child_samples=5).fit(x, upper)
        before = model.predict_proba(x)
        if not rewrite:
            monkeypatch.setattr(export, "float32_thresholds", lambda m: None)
        onx = export.to_onnx(model, inputs, True, "lightgbm")
        monkeypatch.undo()
        assert np.array_equal(model.predict_proba(x), before)  # the rewrite changes no answer
        _, proba = ort.InferenceSession(onx.SerializeToString(), providers=PROVIDERS).run(
            None, {NUMERIC_INPUT: x}
        )
        return float(np.abs(proba - before).max())

    assert graph_error(rewrite=False) > 0.1
    assert graph_error(rewrite=True) < PROBA_TOLERANCE


def _discrete_knn_case(classifier: bool) -> tuple[Any, npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """kNN on integer-valued columns: most test rows have several training rows at the k-th distance."""
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(600, 3)).astype(np.float32)
    y = (x.sum(axis=1) + rng.integers(0, 3, 600) > 5).astype(int)
    xt = rng.integers(0, 4, size=(200, 3)).astype(np.float32)
    model = (KNeighborsClassifier if classifier else KNeighborsRegressor)(n_neighbors=5)
    model.fit(x, y if classifier else y * 3.0 + x[:, 0])
    onx = to_onnx(model, [(NUMERIC_INPUT, FloatTensorType([None, 3]))], classifier, "knn")
    outs = ort.InferenceSession(onx.SerializeToString(), providers=PROVIDERS).run(None, {NUMERIC_INPUT: xt})
    return model, xt, outs[0], outs[-1]


def test_knn_ties_pass_parity_by_rule_and_a_wrong_answer_still_fails() -> None:
    from builders.export import neighbour_tie_answers

    model, xt, label, proba = _discrete_knn_case(True)
    sk = model.predict_proba(xt)
    assert not check_classifier_parity(sk, model.predict(xt), proba, label, PROBA_TOLERANCE).passed
    ties = neighbour_tie_answers(model, xt, proba, True)
    record = check_classifier_parity(sk, model.predict(xt), proba, label, PROBA_TOLERANCE, ties)
    assert record.passed and record.neighbour_ties > 0
    wrong = proba.copy()
    row = int(np.argmax(np.abs(sk[:, 1] - 0.5)))  # a confident row: its opposite is no tie-break
    wrong[row] = 1.0 - np.rint(sk[row])
    assert not neighbour_tie_answers(model, xt, wrong, True)[row]


def test_knn_regressor_ties_pass_parity_by_rule() -> None:
    from builders.export import neighbour_tie_answers

    model, xt, _, value = _discrete_knn_case(False)
    pred = model.predict(xt)
    assert not check_regressor_parity(pred, value, 1.0).passed
    record = check_regressor_parity(pred, value, 1.0, neighbour_tie_answers(model, xt, value, False))
    assert record.passed and record.neighbour_ties > 0
