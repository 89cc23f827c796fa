"""Equal-budget hyper-parameter search: the same trials, folds and seed for every family."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (
    BaseCrossValidator,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    learning_curve,
)
from sklearn.pipeline import Pipeline

from contract.manifest import LearningPoint, SearchRecord

LEARNING_SIZES = (0.2, 0.4, 0.6, 0.8, 1.0)


def cv_splitter(task: str, folds: int, seed: int) -> BaseCrossValidator:
    """One splitter for every family, so all see identical folds."""
    if task == "regression":
        return KFold(n_splits=folds, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def scoring_for(task: str) -> str:
    """Higher is better: accuracy for classification, negative RMSE for regression."""
    return "neg_root_mean_squared_error" if task == "regression" else "accuracy"


def _space_size(space: dict[str, Any]) -> float:
    if not all(isinstance(v, list) for v in space.values()):
        return math.inf
    return float(np.prod([len(v) for v in space.values()])) if space else 1.0


def search(
    pipeline: Pipeline,
    space: dict[str, Any],
    x: pd.DataFrame,
    y: npt.NDArray[Any],
    *,
    task: str,
    budget: int,
    cv: BaseCrossValidator,
    seed: int,
    n_jobs: int,
) -> tuple[Pipeline, dict[str, Any], SearchRecord]:
    """Random search of ``budget`` trials (fewer only when the space has fewer points), refit on x."""
    trials = int(min(budget, _space_size(space)))
    folds = cv.get_n_splits()
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Small budgets leave MLPs short of convergence; that is part of what the budget buys.
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid = {f"model__{k}": v for k, v in space.items()}
        searcher = RandomizedSearchCV(
            pipeline,
            grid,
            n_iter=trials,
            cv=cv,
            scoring=scoring_for(task),
            random_state=seed,
            n_jobs=n_jobs,
            refit=True,
            error_score="raise",
        )
        searcher.fit(x, y)
    seconds = time.perf_counter() - started
    params = {k.removeprefix("model__"): _jsonable(v) for k, v in searcher.best_params_.items()}
    record = SearchRecord(
        budget_trials=budget,
        trials_run=len(searcher.cv_results_["params"]),
        cv_folds=folds,
        seed=seed,
        seconds=round(seconds, 3),
        best_cv_score=float(searcher.best_score_),
        scoring=scoring_for(task),
    )
    return searcher.best_estimator_, params, record


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def learning_points(
    pipeline: Pipeline,
    x: pd.DataFrame,
    y: npt.NDArray[Any],
    *,
    task: str,
    cv: BaseCrossValidator,
    n_jobs: int,
) -> tuple[list[LearningPoint], bool]:
    """CV score of the tuned configuration at growing training sizes, and whether it still improves.

    "Still improving" means the last step (80% -> 100% of the training folds) gained more than a tenth
    of the whole curve's gain and more than a noise floor of 0.002 (accuracy) or 0.2% of RMSE.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sizes, _, test_scores = learning_curve(
            clone(pipeline),
            x,
            y,
            train_sizes=list(LEARNING_SIZES),
            cv=cv,
            scoring=scoring_for(task),
            n_jobs=n_jobs,
            shuffle=True,
            random_state=0,
        )
    means = test_scores.mean(axis=1)
    stds = test_scores.std(axis=1)
    points = [
        LearningPoint(train_rows=int(n), score=float(m), score_std=float(s))
        for n, m, s in zip(sizes, means, stds, strict=True)
    ]
    last_gain = means[-1] - means[-2]
    total_gain = means[-1] - means[0]
    floor = 0.002 if task != "regression" else 0.002 * abs(means[-1])
    improving = bool(last_gain > max(0.1 * abs(total_gain), floor))
    return points, improving
