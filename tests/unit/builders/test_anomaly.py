"""Anomaly detection: detectors as binary classifiers of rank scores, exact in ONNX, flagging the
expected share of new normal rows; the task's bad input; a whole wbc_outliers build."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from builders import export
from builders.anomaly import Detector, KNNDistance
from builders.build import BuildOptions, run_build
from builders.data import load_wbc_outliers, prepare
from builders.errors import BuildError
from builders.members import session
from contract.manifest import ColumnSpec
from contract.verify import load_card, verify
from tests.helpers import BundledBuild

COLUMNS = [ColumnSpec(name=f"c{i}", tensor=f"c{i}", kind="numeric") for i in range(4)]
DETECTORS = {
    "isolation_forest": lambda: IsolationForest(n_estimators=50, random_state=0),
    "lof": lambda: LocalOutlierFactor(n_neighbors=10, novelty=True),
    "one_class_svm": lambda: OneClassSVM(nu=0.05),
    "knn_distance": lambda: KNNDistance(n_neighbors=5),
}


def _rows(n: int, seed: int, anomalies: float = 0.05) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (rng.random(n) < anomalies).astype(np.int64)
    x[y == 1] += 4 * rng.choice([-1, 1], size=(int(y.sum()), 4))
    return pd.DataFrame(x, columns=[c.tensor for c in COLUMNS]), y


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_graphs_answer_as_scikit_learn_and_rank_anomalies_higher(name: str) -> None:
    x, y = _rows(600, seed=0)
    pipe = Pipeline([("scale", StandardScaler()), ("model", Detector(DETECTORS[name](), 0.05))]).fit(x, y)
    x_new, y_new = _rows(400, seed=1)
    label, proba = session(export.to_onnx(pipe, export.initial_types(COLUMNS), True, name)).run(
        None, {"numeric": x_new.to_numpy()}
    )

    np.testing.assert_allclose(proba, pipe.predict_proba(x_new), atol=export.PROBA_TOLERANCE)
    assert (label == pipe.predict(x_new)).all()
    assert proba[y_new == 1, 1].mean() > 0.9 > proba[y_new == 0, 1].mean()


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_new_normal_rows_are_flagged_at_about_the_contamination(name: str) -> None:
    """Training rows are ranked without themselves among their neighbours: otherwise every new row
    would look more unusual than the training rows and far more than 5% would be flagged."""
    x, _ = _rows(800, seed=2, anomalies=0.0)
    det = Detector(DETECTORS[name](), 0.05).fit(x, np.r_[1, np.zeros(len(x) - 1, dtype=np.int64)])
    fresh, _ = _rows(4000, seed=3, anomalies=0.0)

    share = float(np.mean(det.predict(fresh) == 1))

    assert 0.025 <= share <= 0.09, share


def test_a_fold_smaller_than_k_uses_every_other_row() -> None:
    x, y = _rows(12, seed=4, anomalies=0.3)
    det = Detector(LocalOutlierFactor(n_neighbors=35, novelty=True)).fit(x, y)
    assert det.detector_.n_neighbors == 11


def _labelled(n: int = 200, anomalies: int = 12) -> pd.DataFrame:
    x, _ = _rows(n, seed=5, anomalies=0.0)
    x["label"] = ["ok"] * (n - anomalies) + ["fraud"] * anomalies
    return x


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            _labelled().assign(label=["a", "b", "c", "d"] * 50),
            "--task anomaly: expected 2 labels in 'label' (normal and anomaly), got 4",
        ),
        (_labelled(anomalies=100), "--task anomaly: 'label' has as many rows of"),
        (
            _labelled().assign(note=[f"free text number {i} with words" for i in range(200)]),
            "--task anomaly: text columns are not supported (note)",
        ),
    ],
)
def test_the_anomaly_task_refuses_what_it_cannot_do(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(BuildError) as err:
        prepare(frame, "label", "anomaly", "t", "tests", "0" * 64)
    assert str(err.value).startswith(message), str(err.value)


def test_the_anomaly_is_class_one() -> None:
    table = prepare(_labelled(), "label", "anomaly", "t", "tests", "0" * 64)
    assert table.classes == ["ok", "fraud"] and table.anomaly and table.task == "binary"
    assert int(table.y.sum()) == 12


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": "iris", "contamination": 0.1}, "--contamination: only with --task anomaly"),
        (
            {"dataset": "wbc_outliers", "contamination": 0.5},
            "--contamination: expected a share in (0, 0.5), got 0.5",
        ),
        (
            {"dataset": "wbc_outliers", "families": ["random_forest"]},
            "--families: unknown family 'random_forest' for anomaly",
        ),
    ],
)
def test_bad_anomaly_options_are_refused_before_training(
    options: dict[str, Any], message: str, tmp_path: Any
) -> None:
    with pytest.raises(BuildError) as err:
        run_build(BuildOptions(out=tmp_path / "m", **options))
    assert str(err.value).startswith(message), str(err.value)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_wbc_outliers_ships_with_scikit_learn() -> None:
    frame = load_wbc_outliers()
    assert frame["diagnosis"].value_counts().to_dict() == {"benign": 357, "malignant": 21}


def test_an_anomaly_build_serves_every_detector_judged_on_average_precision(
    anomaly_repo: BundledBuild,
) -> None:
    manifest = verify(anomaly_repo.version_dir)

    assert manifest.task == "binary" and manifest.classes == ["benign", "malignant"]
    assert manifest.primary_metric == "average_precision"
    assert [m.name for m in manifest.members] == [
        "dummy",
        "isolation_forest",
        "lof",
        "one_class_svm",
        "knn_distance",
    ]
    for name in manifest.variant_names():
        card = load_card(
            anomaly_repo.version_dir
            / next(m.card for m in [*manifest.members, *manifest.ensembles] if m.name == name)
        )
        test = card.metrics["test"]
        assert {"precision", "recall", "average_precision", "roc_auc"} <= set(test), name
        if card.kind == "member" and name != "dummy":
            assert card.parity is not None and card.parity.passed, name
            assert card.decision_threshold is not None and 0.5 < card.decision_threshold < 1.0, name
    best = max(
        (load_card(anomaly_repo.version_dir / m.card) for m in manifest.members if m.name != "dummy"),
        key=lambda c: c.metrics["test"]["average_precision"],
    )
    dummy = load_card(anomaly_repo.version_dir / manifest.members[0].card)
    assert best.metrics["test"]["average_precision"] > 2 * dummy.metrics["test"]["average_precision"]


def test_the_anomaly_label_can_be_named() -> None:
    frame = _labelled(anomalies=100)  # as many of each: the rarer label cannot decide
    table = prepare(frame, "label", "anomaly", "t", "tests", "0" * 64, anomaly_class="ok")
    assert table.classes == ["fraud", "ok"] and int(table.y.sum()) == 100

    with pytest.raises(BuildError) as err:
        prepare(frame, "label", "anomaly", "t", "tests", "0" * 64, anomaly_class="nope")
    assert str(err.value) == "--anomaly-class 'nope': not a label of 'label'; labels are 'fraud', 'ok'"
    with pytest.raises(BuildError, match="--anomaly-class: only with --task anomaly and a --target"):
        prepare(frame, "label", "binary", "t", "tests", "0" * 64, anomaly_class="ok")


def test_an_isolation_forest_is_one_tree_ensemble_summed_in_double() -> None:
    """skl2onnx's converter emits a tree node and path-length arithmetic per tree (~1.2 ms a row for
    100 trees); ours sums every tree's leaf in one node, and the sums are scikit-learn's bit for bit."""
    from builders.anomaly import forest_depths

    x, y = _rows(600, seed=6)
    pipe = Pipeline([("model", Detector(IsolationForest(n_estimators=100, random_state=0)))]).fit(x, y)
    onx = export.to_onnx(pipe, export.initial_types(COLUMNS), True, "isolation_forest")

    assert [n.op_type for n in onx.graph.node].count("TreeEnsembleRegressor") == 1
    fresh, _ = _rows(3000, seed=7)
    _, proba = session(onx).run(None, {"numeric": fresh.to_numpy()})
    # within float32 rounding of k / n: no row's rank among the training rows moved (that is 1 / 600)
    np.testing.assert_allclose(proba, pipe.predict_proba(fresh), atol=1e-6)
    forest = pipe.steps[-1][1].detector_
    ranks = np.argsort(forest_depths(forest, fresh))
    assert (np.diff(-forest.score_samples(fresh.to_numpy())[ranks]) <= 1e-12).all(), (
        "depths order as the score"
    )
