"""The candidate families, each with its search space and the assumptions a user should know.

Every family gets the same search budget (trials, CV folds, seed); see builders/search.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lightgbm import LGBMClassifier, LGBMRegressor
from scipy.stats import loguniform, randint, uniform
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.naive_bayes import ComplementNB, GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, LocalOutlierFactor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC, OneClassSVM
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from xgboost import XGBClassifier, XGBRegressor

from builders.anomaly import Detector, KNNDistance
from builders.boosting import early_stopped
from builders.clusters import ClusterFeatures
from builders.errors import BuildError


@dataclass(frozen=True)
class Family:
    """A model family: how to make it, what to search, whether its inputs need scaling."""

    name: str
    make: Callable[[int], BaseEstimator]
    space: dict[str, Any]
    scale: bool
    """Linear, distance and neural models need scaled inputs; trees must not get them (float32 scaling
    moves values across split thresholds and breaks ONNX parity)."""
    assumptions: str
    role: Literal["baseline", "simplest", ""] = ""
    """"baseline" (the dummy), "simplest" (the first real model every gain is measured against), or ""."""
    text: Literal["no", "also", "only"] = "no"
    """Tables with free-text columns: "no" families are left out (they need dense features, and TF-IDF
    gives thousands of sparse ones), "also" ones take them, "only" ones are for such tables alone."""
    nonnegative: bool = False
    """Scaled numeric inputs into [0, 1] instead of standardised (naive Bayes on counts)."""


_TREE_SPACE = {
    "max_depth": [2, 3, 4, 6, 8, 12, None],
    "min_samples_leaf": randint(1, 20),
}
_FOREST_SPACE = {
    "n_estimators": [50, 100, 150],
    "max_depth": [4, 8, 12, None],
    "max_features": ["sqrt", 0.5, 1.0],
    "min_samples_leaf": randint(1, 10),
}
# Boosting: no rounds in the spaces, early stopping decides them (builders/boosting.py; up to 1,000);
# leaves and depth wide enough for tables of a few thousand rows, row and column subsampling.
_HGB_SPACE = {
    "learning_rate": loguniform(0.02, 0.3),
    "max_leaf_nodes": [7, 15, 31, 63],
    "min_samples_leaf": randint(5, 40),
    "l2_regularization": loguniform(1e-4, 1.0),
}
_LGBM_SPACE = {
    "learning_rate": loguniform(0.02, 0.2),
    "num_leaves": [7, 15, 31, 63],
    "min_child_samples": randint(5, 40),
    "reg_lambda": loguniform(1e-3, 10.0),
    "colsample_bytree": uniform(0.5, 0.5),
    "subsample": uniform(0.6, 0.4),
    "subsample_freq": [1],
}
_XGB_SPACE = {
    "learning_rate": loguniform(0.02, 0.2),
    "max_depth": [2, 3, 4, 6, 8],
    "min_child_weight": loguniform(0.5, 10.0),
    "reg_lambda": loguniform(1e-2, 10.0),
    "colsample_bytree": uniform(0.5, 0.5),
    "subsample": uniform(0.6, 0.4),
}


def _stopped(space: dict[str, Any]) -> dict[str, Any]:
    """A boosting space addressed to the estimator inside the early-stopping wrapper."""
    return {f"estimator__{k}": v for k, v in space.items()}


# k-means distances beside the (scaled) inputs into a linear model: the chapter's "clustering as
# features" combination; the number of centres and the downstream regularisation are searched.
_CLUSTER_SPACE = {"clusters__n_clusters": [4, 8, 16, 32]}


def _clustered(model: BaseEstimator, seed: int) -> Pipeline:
    return Pipeline([("clusters", ClusterFeatures(random_state=seed)), ("downstream", model)])


_MLP_SPACE = {
    "hidden_layer_sizes": [(16,), (32,), (64,), (32, 16)],
    "alpha": loguniform(1e-5, 1e-1),
    "learning_rate_init": loguniform(1e-3, 2e-2),
}
# Uniform weights only: skl2onnx's kNN graph ignores weights="distance" (measured: P = 0.5/0.5 where
# scikit-learn gave 0.48/0.52). Odd k avoids exact two-class ties.
_KNN_SPACE = {"n_neighbors": list(range(1, 31, 2))}

CLASSIFIERS: tuple[Family, ...] = (
    Family(
        "dummy",
        lambda s: DummyClassifier(strategy="prior"),
        {},
        False,
        "predicts the training class frequencies: the floor every model must beat",
        role="baseline",
        text="also",
    ),
    Family(
        "logreg",
        lambda s: LogisticRegression(max_iter=2000),
        {"C": loguniform(1e-3, 1e2)},
        True,
        "linear decision boundary in the (one-hot, scaled, TF-IDF) features",
        role="simplest",
        text="also",
    ),
    Family(
        "complement_nb",
        lambda s: ComplementNB(),
        {"alpha": loguniform(1e-3, 1.0)},
        True,
        "naive Bayes on term weights, complement form (robust to uneven classes): the classic text baseline",
        nonnegative=True,
        text="only",
    ),
    Family(
        "linear_svm",
        # sigmoid calibration on three internal folds: a margin is not a probability
        lambda s: CalibratedClassifierCV(LinearSVC(random_state=s), method="sigmoid", cv=3),
        {"estimator__C": loguniform(1e-3, 10.0)},
        True,
        "maximum-margin linear boundary in the TF-IDF features, probabilities by Platt scaling",
        text="only",
    ),
    Family(
        "naive_bayes",
        lambda s: GaussianNB(),
        {"var_smoothing": loguniform(1e-11, 1e-5)},
        False,
        "features conditionally independent and normal given the class",
    ),
    Family(
        "knn",
        lambda s: KNeighborsClassifier(),
        _KNN_SPACE,
        True,
        "similar rows share labels; distances are meaningful after scaling",
    ),
    Family(
        "tree",
        lambda s: DecisionTreeClassifier(random_state=s),
        _TREE_SPACE,
        False,
        "axis-aligned splits; high variance, interpretable",
    ),
    Family(
        "random_forest",
        lambda s: RandomForestClassifier(random_state=s, n_jobs=1),
        _FOREST_SPACE,
        False,
        "bagged trees with feature randomness: reduces the variance of single trees",
    ),
    Family(
        "extra_trees",
        lambda s: ExtraTreesClassifier(random_state=s, n_jobs=1),
        _FOREST_SPACE,
        False,
        "randomised split thresholds: even lower variance than a forest, slightly more bias",
    ),
    Family(
        "hist_gb",
        lambda s: early_stopped(HistGradientBoostingClassifier(random_state=s), s),
        _stopped(_HGB_SPACE),
        False,
        "boosting: trees fit sequentially to the previous mistakes; strong on tabular data",
    ),
    Family(
        "lightgbm",
        lambda s: early_stopped(LGBMClassifier(random_state=s, n_jobs=1, verbose=-1), s),
        _stopped(_LGBM_SPACE),
        False,
        "LightGBM: leaf-wise boosted trees on histogram bins; strong on tabular data, can overfit few rows",
    ),
    Family(
        "xgboost",
        lambda s: early_stopped(XGBClassifier(random_state=s, n_jobs=1, tree_method="hist"), s),
        _stopped(_XGB_SPACE),
        False,
        "XGBoost: depth-wise boosted trees with second-order gradients and L2 on leaf weights",
    ),
    Family(
        "kmeans_logreg",
        lambda s: _clustered(LogisticRegression(max_iter=2000), s),
        {**_CLUSTER_SPACE, "downstream__C": loguniform(1e-3, 1e2)},
        True,
        "logistic regression on the inputs and their distances to k-means centres (radial features)",
    ),
    Family(
        "mlp",
        lambda s: MLPClassifier(max_iter=400, random_state=s),
        _MLP_SPACE,
        True,
        "smooth non-linear function of scaled inputs; needs more data than trees",
    ),
)

REGRESSORS: tuple[Family, ...] = (
    Family(
        "dummy",
        lambda s: DummyRegressor(strategy="mean"),
        {},
        False,
        "predicts the training mean: the floor every model must beat",
        role="baseline",
        text="also",
    ),
    Family(
        "ridge",
        lambda s: Ridge(),
        {"alpha": loguniform(1e-3, 1e3)},
        True,
        "linear in the (one-hot, scaled, TF-IDF) features",
        role="simplest",
        text="also",
    ),
    Family(
        "knn",
        lambda s: KNeighborsRegressor(),
        _KNN_SPACE,
        True,
        "similar rows have similar targets; distances are meaningful after scaling",
    ),
    Family(
        "tree",
        lambda s: DecisionTreeRegressor(random_state=s),
        _TREE_SPACE,
        False,
        "axis-aligned splits; piecewise-constant, high variance",
    ),
    Family(
        "random_forest",
        lambda s: RandomForestRegressor(random_state=s, n_jobs=1),
        _FOREST_SPACE,
        False,
        "bagged trees with feature randomness: reduces the variance of single trees",
    ),
    Family(
        "hist_gb",
        lambda s: early_stopped(HistGradientBoostingRegressor(random_state=s), s),
        _stopped(_HGB_SPACE),
        False,
        "boosting: trees fit sequentially to the previous residuals",
    ),
    Family(
        "lightgbm",
        lambda s: early_stopped(LGBMRegressor(random_state=s, n_jobs=1, verbose=-1), s),
        _stopped(_LGBM_SPACE),
        False,
        "LightGBM: leaf-wise boosted trees on histogram bins, fit to the previous residuals",
    ),
    Family(
        "xgboost",
        lambda s: early_stopped(XGBRegressor(random_state=s, n_jobs=1, tree_method="hist"), s),
        _stopped(_XGB_SPACE),
        False,
        "XGBoost: depth-wise boosted trees with second-order gradients and L2 on leaf weights",
    ),
    Family(
        "kmeans_ridge",
        lambda s: _clustered(Ridge(), s),
        {**_CLUSTER_SPACE, "downstream__alpha": loguniform(1e-3, 1e3)},
        True,
        "ridge on the inputs and their distances to k-means centres (radial features)",
    ),
    Family(
        "mlp",
        lambda s: MLPRegressor(max_iter=600, random_state=s),
        _MLP_SPACE,
        True,
        "smooth non-linear function of scaled inputs; needs more data than trees",
    ),
)


# Detectors (--task anomaly): each trains on the features alone and scores how unusual a row is;
# builders/anomaly.py turns the score into its rank among the training rows' and flags the expected
# contamination. Spaces address the detector inside that wrapper.
DETECTORS: tuple[Family, ...] = (
    Family(
        "dummy",
        lambda s: DummyClassifier(strategy="prior"),
        {},
        False,
        "the training share of anomalies for every row: the floor every detector must beat",
        role="baseline",
    ),
    Family(
        "isolation_forest",
        lambda s: Detector(IsolationForest(random_state=s, n_jobs=1)),
        {
            "detector__n_estimators": [50, 100],
            "detector__max_samples": [0.25, 0.5, 1.0],
        },  # no max_features: skl2onnx converts isolation forests on every feature only
        False,
        "anomalies are isolated by fewer random splits; no scaling, no distances",
        role="simplest",
    ),
    Family(
        "lof",
        lambda s: Detector(LocalOutlierFactor(novelty=True)),
        {"detector__n_neighbors": [5, 10, 20, 35, 50]},
        True,
        "local outlier factor (novelty mode): a row far less dense than its neighbours is anomalous",
    ),
    Family(
        "one_class_svm",
        lambda s: Detector(OneClassSVM()),
        {"detector__nu": loguniform(0.01, 0.5), "detector__gamma": loguniform(1e-3, 1.0)},
        True,
        "a smooth (RBF) boundary around the bulk of the scaled rows",
    ),
    Family(
        "knn_distance",
        lambda s: Detector(KNNDistance()),
        {"detector__n_neighbors": [1, 3, 5, 10, 20]},
        True,
        "mean distance to the k nearest training rows: far from every known row is anomalous",
    ),
)


def families_for(task: str, names: list[str] | None, text: bool = False) -> list[Family]:
    """The families to train for a table (``text``: with free-text columns; task "anomaly": the
    detectors); the baseline and the simplest model are always included."""
    base = {"regression": REGRESSORS, "anomaly": DETECTORS}.get(task, CLASSIFIERS)
    pool = [f for f in base if ((f.text != "no") if text else (f.text != "only"))]
    by_name = {f.name: f for f in pool}
    if not names:
        return list(pool)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        which = f"{task} with text columns" if text else task
        raise BuildError(
            f"--families: unknown family {unknown[0]!r} for {which}; expected some of {', '.join(by_name)}"
        )
    required = {f.name for f in pool if f.role}
    return [f for f in pool if f.name in set(names) | required]


def all_family_names() -> set[str]:
    """Every family name known for any task (for validating --families before reading data)."""
    return {f.name for f in CLASSIFIERS + REGRESSORS + DETECTORS}
