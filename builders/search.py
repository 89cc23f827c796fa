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
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (HalvingRandomSearchCV)
from sklearn.model_selection import (
    BaseCrossValidator,
    HalvingRandomSearchCV,
    KFold,
    ParameterSampler,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
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
    """Higher is better: accuracy for classification, negative RMSE for regression, average precision
    of the anomaly score for detectors."""
    return {"regression": "neg_root_mean_squared_error", "anomaly": "average_precision"}.get(task, "accuracy")


Space = dict[str, Any] | list[dict[str, Any]]
"""A family's search space: keys of the model step (or "prep__..." for preprocessing), or a list of
such dicts, one drawn per trial before its values."""


def _space_size(space: Space) -> float:
    if isinstance(space, list):
        return float(sum(_space_size(s) for s in space))
    if not all(isinstance(v, list) for v in space.values()):
        return math.inf
    return float(np.prod([len(v) for v in space.values()])) if space else 1.0


def _grid(space: Space) -> Any:
    """The space addressed to the pipeline's steps."""
    if isinstance(space, list):
        return [_grid(s) for s in space]
    return {k if k.startswith("prep__") else f"model__{k}": v for k, v in space.items()}


def search(
    pipeline: Pipeline,
    space: Space,
    x: pd.DataFrame,
    y: npt.NDArray[Any],
    *,
    task: str,
    budget: int,
    cv: BaseCrossValidator,
    seed: int,
    n_jobs: int,
    seconds: float | None = None,
    strategy: str = "random",
) -> tuple[Pipeline, dict[str, Any], SearchRecord]:
    """Random search of ``budget`` trials (fewer only when the space has fewer points), refit on x;
    with ``seconds``, trials in the same seeded order until that much time is spent instead; with
    ``strategy="halving"``, successive halving over HALVING_FACTOR x ``budget`` candidates."""
    if seconds is not None:
        return _timed_search(
            pipeline, space, x, y, task=task, cv=cv, seed=seed, n_jobs=n_jobs, seconds=seconds
        )
    trials = int(min(budget * (HALVING_FACTOR if strategy == "halving" else 1), _space_size(space)))
    folds = cv.get_n_splits()
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Small budgets leave MLPs short of convergence; that is part of what the budget buys.
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid = _grid(space)
        common = dict(
            cv=cv,
            scoring=scoring_for(task),
            random_state=seed,
            n_jobs=n_jobs,
            refit=True,
            error_score="raise",
        )
        searcher: Any
        if strategy == "halving" and trials > 1:
            # A candidate that cannot fit the first rounds' sample (kNN with k above its rows) scores
            # NaN and is not kept; one that fails on every row still fails the search.
            warnings.simplefilter("ignore", FitFailedWarning)
            warnings.filterwarnings("ignore", message="One or more of the (test|train) scores are non-finite")
            searcher = HalvingRandomSearchCV(
                pipeline,
                grid,
                n_candidates=trials,
                factor=HALVING_FACTOR,
                min_resources=_min_rows(task, y, folds, trials, len(x)),
                return_train_score=False,
                **{**common, "error_score": np.nan},
            )
        else:
            searcher = RandomizedSearchCV(pipeline, grid, n_iter=trials, **common)
        searcher.fit(x, y)
    seconds = time.perf_counter() - started
    params = {_param_name(k): _jsonable(v) for k, v in searcher.best_params_.items()}
    halving = isinstance(searcher, HalvingRandomSearchCV)
    record = SearchRecord(
        budget_trials=trials if halving else budget,
        # halving scores a candidate once per round it survives: count candidates, not rows of results
        trials_run=int(searcher.n_candidates_[0]) if halving else len(searcher.cv_results_["params"]),
        cv_folds=folds,
        seed=seed,
        seconds=round(seconds, 3),
        best_cv_score=float(searcher.best_score_),
        scoring=scoring_for(task),
        strategy="halving" if halving else "random",
    )
    return searcher.best_estimator_, params, record


HALVING_FACTOR = 3
"""Successive halving: this many times the trial budget in candidates, a third kept each round on
three times the rows (about the fits of the random search's budget, spent mostly on small samples)."""


def _min_rows(task: str, y: npt.NDArray[Any], folds: int, candidates: int, rows: int) -> int:
    """The first round's rows: enough that the last round (one or two candidates left) uses about
    every row, and never fewer than every class in every fold needs."""
    rounds = max(math.ceil(math.log(candidates, HALVING_FACTOR)), 1)
    start = rows // HALVING_FACTOR**rounds
    floor = 2 * folds * (len(np.unique(y)) if task != "regression" else 1)
    return int(min(max(start, floor, 20), rows))


MAX_TIMED_TRIALS = 1000


def _timed_search(
    pipeline: Pipeline,
    space: Space,
    x: pd.DataFrame,
    y: npt.NDArray[Any],
    *,
    task: str,
    cv: BaseCrossValidator,
    seed: int,
    n_jobs: int,
    seconds: float,
) -> tuple[Pipeline, dict[str, Any], SearchRecord]:
    """Trials drawn in one seeded order (the same table and seed always try the same configurations
    first), each scored by the same CV, until ``seconds`` are spent; at least one. Only the number of
    trials depends on the machine's speed; the best is the first of the highest CV score."""
    grid = _grid(space)
    n = int(min(MAX_TIMED_TRIALS, _space_size(space)))
    order = list(ParameterSampler(grid, n_iter=n, random_state=seed)) if grid else [{}]
    started = time.perf_counter()
    best: tuple[float, dict[str, Any]] | None = None
    run = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for params in order:
            if run and time.perf_counter() - started >= seconds:
                break
            candidate = clone(pipeline).set_params(**params)
            score = float(
                np.mean(cross_val_score(candidate, x, y, cv=cv, scoring=scoring_for(task), n_jobs=n_jobs))
            )
            run += 1
            if best is None or score > best[0]:
                best = (score, params)
        assert best is not None
        fitted = clone(pipeline).set_params(**best[1]).fit(x, y)
    spent = time.perf_counter() - started
    record = SearchRecord(
        budget_trials=run,
        trials_run=run,
        cv_folds=cv.get_n_splits(),
        seed=seed,
        seconds=round(spent, 3),
        best_cv_score=best[0],
        scoring=scoring_for(task),
        budget_seconds=round(seconds, 3),
    )
    return fitted, {_param_name(k): _jsonable(v) for k, v in best[1].items()}, record


def _param_name(key: str) -> str:
    """A search key as the card shows it: without the pipeline step and the early-stopping wrapper
    (a text column's vectoriser keeps its step: "text_0__ngram_range")."""
    for prefix in ("prep__", "model__", "estimator__", "detector__"):
        key = key.removeprefix(prefix)
    return key


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
        # a size too small for a fit (a class missing, or fewer rows of one than a calibrated SVM's
        # internal folds) scores NaN and is left out below: nothing for the user to act on
        warnings.simplefilter("ignore", FitFailedWarning)
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
    # A size where a fit failed scores NaN (a 7-class table's smallest subset can miss a class, which
    # XGBoost refuses): that point is left out rather than written as a number that is not one.
    finite = np.all(np.isfinite(test_scores), axis=1)
    sizes, test_scores = sizes[finite], test_scores[finite]
    means = test_scores.mean(axis=1)
    stds = test_scores.std(axis=1)
    points = [
        LearningPoint(train_rows=int(n), score=float(m), score_std=float(s))
        for n, m, s in zip(sizes, means, stds, strict=True)
    ]
    if len(points) < 2:
        return points, False
    last_gain = means[-1] - means[-2]
    total_gain = means[-1] - means[0]
    floor = 0.002 if task != "regression" else 0.002 * abs(means[-1])
    improving = bool(last_gain > max(0.1 * abs(total_gain), floor))
    return points, improving
