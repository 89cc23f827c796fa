"""Early stopping for the boosting families: the number of rounds is found on a held-out share of the
rows the model is fitted on, then the model is refit on all of them with exactly that many rounds.

The refit keeps the served estimator a plain LightGBM / XGBoost / scikit-learn model (no trees past the
best round for a converter to include, no rows given up to a validation split), so export and parity
are those of the library's own estimator.
"""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone, is_classifier
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from xgboost import XGBModel

VALIDATION_FRACTION = 0.15
PATIENCE = 20
"""Rounds without improvement of the held-out loss before stopping."""
MAX_ROUNDS = 1000
FALLBACK_ROUNDS = 100
"""Rounds when the rows cannot spare a held-out share with every class in both parts."""


def _rounds(model: Any, x: Any, y: Any, x_val: Any, y_val: Any) -> int:
    """Fit ``model`` (a clone) with early stopping on (x_val, y_val); the best number of rounds."""
    if isinstance(model, lightgbm.LGBMModel):
        model.set_params(n_estimators=MAX_ROUNDS)
        model.fit(
            x,
            y,
            eval_X=(x_val,),
            eval_y=(y_val,),
            callbacks=[lightgbm.early_stopping(PATIENCE, verbose=False)],
        )
        return max(int(model.best_iteration_ or model.n_estimators), 1)
    if isinstance(model, XGBModel):
        model.set_params(n_estimators=MAX_ROUNDS, early_stopping_rounds=PATIENCE)
        model.fit(x, y, eval_set=[(x_val, y_val)], verbose=False)
        return int(model.best_iteration) + 1
    if isinstance(model, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        model.set_params(max_iter=MAX_ROUNDS, early_stopping=True, n_iter_no_change=PATIENCE)
        model.fit(x, y, X_val=x_val, y_val=y_val)
        # it stops PATIENCE rounds after the best one and keeps them all
        return max(int(model.n_iter_) - PATIENCE, 1) if model.n_iter_ < MAX_ROUNDS else MAX_ROUNDS
    raise TypeError(f"no early stopping for {type(model).__name__}")


def _set_rounds(model: Any, rounds: int) -> Any:
    if isinstance(model, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return model.set_params(max_iter=rounds, early_stopping=False)
    if isinstance(model, XGBModel):
        return model.set_params(n_estimators=rounds, early_stopping_rounds=None)
    return model.set_params(n_estimators=rounds)


class _EarlyStopped(BaseEstimator):
    """A boosting estimator whose rounds early stopping decides (see the module's docstring);
    ``estimator_`` is the refit plain estimator that serves, ``rounds_`` its number of rounds."""

    def __init__(self, estimator: Any, random_state: int = 0) -> None:
        self.estimator = estimator
        self.random_state = random_state

    def fit(self, x: Any, y: npt.NDArray[Any]) -> _EarlyStopped:
        y = np.asarray(y)
        classifier = is_classifier(self.estimator)
        counts = np.unique(y, return_counts=True)[1] if classifier else None
        if counts is not None and (counts.min() < 2 or len(counts) > VALIDATION_FRACTION * len(y)):
            # a class too rare to be on both sides of the split (XGBoost refuses a missing class)
            self.rounds_ = FALLBACK_ROUNDS
        else:
            x_fit, x_val, y_fit, y_val = train_test_split(
                x, y, test_size=VALIDATION_FRACTION, random_state=self.random_state,
                stratify=y if classifier else None,
            )  # fmt: skip
            self.rounds_ = _rounds(clone(self.estimator), x_fit, y_fit, x_val, y_val)
        self.estimator_ = _set_rounds(clone(self.estimator), self.rounds_).fit(x, y)
        if hasattr(self.estimator_, "classes_"):
            self.classes_ = self.estimator_.classes_
        return self

    def predict(self, x: Any) -> npt.NDArray[Any]:
        return np.asarray(self.estimator_.predict(x))


class EarlyStoppedClassifier(ClassifierMixin, _EarlyStopped):
    def predict_proba(self, x: Any) -> npt.NDArray[Any]:
        return np.asarray(self.estimator_.predict_proba(x))


class EarlyStoppedRegressor(RegressorMixin, _EarlyStopped):
    pass


def early_stopped(estimator: Any, seed: int) -> _EarlyStopped:
    """``estimator`` wrapped so that early stopping decides its rounds."""
    if is_classifier(estimator):
        return EarlyStoppedClassifier(estimator, random_state=seed)
    return EarlyStoppedRegressor(estimator, random_state=seed)


def served(model: Any) -> Any:
    """The estimator that serves: the refit plain one inside an early-stopped wrapper."""
    return model.estimator_ if isinstance(model, _EarlyStopped) else model
