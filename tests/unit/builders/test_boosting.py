"""Early stopping for the boosting families (builders/boosting.py): the rounds come from a held-out
share, the served estimator is the library's own with exactly that many trees, fitted on every row."""

from __future__ import annotations

import numpy as np
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier
from xgboost import XGBClassifier

from builders.boosting import FALLBACK_ROUNDS, MAX_ROUNDS, early_stopped, served


def _trees(model: object) -> int:
    if isinstance(model, LGBMClassifier | LGBMRegressor):
        return int(model.booster_.num_trees())
    if isinstance(model, XGBClassifier):
        return int(model.get_booster().num_boosted_rounds())
    return int(model.n_iter_)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "estimator",
    [
        LGBMClassifier(learning_rate=0.1, verbose=-1, n_jobs=1),
        XGBClassifier(learning_rate=0.1, n_jobs=1, tree_method="hist"),
        HistGradientBoostingClassifier(learning_rate=0.1),
    ],
    ids=["lightgbm", "xgboost", "hist_gb"],
)
def test_the_served_model_has_exactly_the_early_stopped_rounds_and_saw_every_row(estimator: object) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    model = early_stopped(estimator, seed=0).fit(x, y)
    plain = served(model)
    assert type(plain) is type(estimator)
    assert 1 <= model.rounds_ < MAX_ROUNDS  # an easy table stops long before the cap
    assert _trees(plain) == model.rounds_
    np.testing.assert_array_equal(model.predict_proba(x), plain.predict_proba(x))
    again = early_stopped(estimator, seed=0).fit(x, y)
    assert again.rounds_ == model.rounds_  # the held-out share is seeded


def test_a_slower_learning_rate_needs_more_rounds() -> None:
    x, y = load_diabetes(return_X_y=True)
    fast = early_stopped(LGBMRegressor(learning_rate=0.3, verbose=-1, n_jobs=1), seed=0).fit(x, y)
    slow = early_stopped(LGBMRegressor(learning_rate=0.02, verbose=-1, n_jobs=1), seed=0).fit(x, y)
    assert slow.rounds_ > fast.rounds_


def test_a_class_too_rare_to_hold_out_falls_back_to_a_fixed_number_of_rounds() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = np.array([0] * 30 + [1] * 29 + [2])
    model = early_stopped(XGBClassifier(n_jobs=1, tree_method="hist"), seed=0).fit(x, y)
    assert model.rounds_ == FALLBACK_ROUNDS and _trees(served(model)) == FALLBACK_ROUNDS
