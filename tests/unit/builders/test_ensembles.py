"""Member selection, weights, the independence benchmark, and stacking against scikit-learn's own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import StackingClassifier, StackingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from builders.ensembles import (
    disagreement,
    error_correlation,
    error_matrix,
    fit_meta,
    independent_vote_accuracy,
    select_members,
    skill_weights,
)
from contract.combine import stack_features

# --- the independence benchmark ------------------------------------------------------------------


def test_three_independent_70_percent_members_vote_to_78_4_percent() -> None:
    assert independent_vote_accuracy([0.7, 0.7, 0.7]) == pytest.approx(0.784)


def test_independent_vote_accuracy_by_hand() -> None:
    assert independent_vote_accuracy([0.9]) == pytest.approx(0.9)
    # Two members: a split vote is a coin flip, which averages to the mean accuracy.
    assert independent_vote_accuracy([0.9, 0.6]) == pytest.approx(0.75)
    # P(at least 2 of 3 right) = p1 p2 + p1 p3 + p2 p3 - 2 p1 p2 p3.
    p1, p2, p3 = 0.9, 0.8, 0.6
    expected = p1 * p2 + p1 * p3 + p2 * p3 - 2 * p1 * p2 * p3
    assert independent_vote_accuracy([p1, p2, p3]) == pytest.approx(expected)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.51, 0.99), st.integers(1, 5))
def test_more_independent_better_than_chance_members_help(p: float, k: int) -> None:
    smaller = independent_vote_accuracy([p] * (2 * k - 1))
    larger = independent_vote_accuracy([p] * (2 * k + 1))
    assert p <= smaller + 1e-12
    assert smaller < larger <= 1.0


# --- errors, correlation, disagreement -----------------------------------------------------------


def test_error_matrix() -> None:
    y = np.array([0, 1, 2, 1])
    errors = error_matrix("multiclass", y, [np.array([0, 1, 2, 2]), np.array([1, 1, 2, 1])])
    np.testing.assert_array_equal(errors, [[0, 0, 0, 1], [1, 0, 0, 0]])
    residuals = error_matrix("regression", np.array([1.0, 2.0]), [np.array([1.5, 1.0])])
    np.testing.assert_array_equal(residuals, [[0.5, -1.0]])


def test_error_correlation_of_a_member_that_never_errs_is_zero() -> None:
    errors = np.array(
        [
            [0, 0, 0, 0, 0, 0],  # perfect member: its errors have no variance
            [1, 0, 1, 0, 0, 1],
            [1, 0, 1, 0, 0, 1],  # identical to the previous member
            [0, 1, 0, 1, 1, 0],  # the exact opposite
            [1, 1, 1, 1, 1, 1],  # always wrong: constant too
        ],
        dtype=np.float64,
    )
    corr = error_correlation(errors)
    assert np.isfinite(corr).all()
    np.testing.assert_array_equal(np.diag(corr), np.ones(5))
    np.testing.assert_array_equal(corr[0, 1:], 0.0)
    np.testing.assert_array_equal(corr[1:, 0], 0.0)
    np.testing.assert_array_equal(corr[4, :4], 0.0)
    assert corr[1, 2] == pytest.approx(1.0)
    assert corr[1, 3] == pytest.approx(-1.0)
    np.testing.assert_allclose(corr, corr.T)


def test_disagreement() -> None:
    preds = [np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), np.array([1, 0, 0, 1])]
    d = disagreement(preds)
    np.testing.assert_allclose(d, [[0, 0.25, 1.0], [0.25, 0, 0.75], [1.0, 0.75, 0]])


# --- selection and weights -----------------------------------------------------------------------


def test_selection_prefers_an_uncorrelated_member_over_a_slightly_better_correlated_one() -> None:
    names = ["best", "echo", "different", "other"]
    scores = [0.95, 0.94, 0.93, 0.92]
    corr = np.array(
        [
            [1.0, 0.9, 0.0, 0.1],
            [0.9, 1.0, 0.2, 0.2],
            [0.0, 0.2, 1.0, 0.1],
            [0.1, 0.2, 0.1, 1.0],
        ]
    )
    chosen = select_members(names, scores, baseline_score=0.5, corr=corr)
    assert chosen == ["best", "different", "other"]

    # Without the correlation, "echo" (second best) would have been picked.
    assert select_members(names, scores, 0.5, np.eye(4)) == ["best", "echo", "different"]


def test_selection_skips_members_below_the_midpoint_and_keeps_an_odd_count() -> None:
    names = ["a", "b", "c", "d", "e"]
    scores = [0.90, 0.89, 0.88, 0.87, 0.60]  # e is below the midpoint between baseline 0.5 and best 0.9
    chosen = select_members(names, scores, 0.5, np.eye(5))
    assert "e" not in chosen
    assert len(chosen) == 3


def test_selection_takes_five_from_seven_or_more() -> None:
    names = [f"m{i}" for i in range(8)]
    scores = [0.9 - 0.01 * i for i in range(8)]
    chosen = select_members(names, scores, 0.5, np.eye(8))
    assert chosen == ["m0", "m1", "m2", "m3", "m4"]


def test_selection_with_two_candidates_takes_both() -> None:
    assert select_members(["a", "b"], [0.8, 0.9], 0.5, np.eye(2)) == ["b", "a"]


def test_skill_weights() -> None:
    assert skill_weights([0.9, 0.7, 0.5], 0.5) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert skill_weights([0.4, 0.3], 0.5) == [1.0, 1.0]  # no skill anywhere: uniform
    assert sum(skill_weights([0.91, 0.83, 0.77], 0.6)) == pytest.approx(1.0, abs=1e-5)


# --- stacking against scikit-learn ---------------------------------------------------------------


def _classifiers() -> list[tuple[str, Any]]:
    return [
        ("logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
        ("tree", DecisionTreeClassifier(max_depth=3, random_state=0)),
        ("nb", GaussianNB()),
    ]


@pytest.mark.parametrize(
    ("dataset", "task", "width"),
    [("breast_cancer", "binary", 3), ("wine", "multiclass", 9)],
)
def test_stacking_meta_learner_matches_stacking_classifier(dataset: str, task: str, width: int) -> None:
    x, y = (load_breast_cancer if dataset == "breast_cancer" else load_wine)(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    members = _classifiers()
    reference = StackingClassifier(
        members, final_estimator=LogisticRegression(max_iter=10_000, tol=1e-10, random_state=0), cv=cv
    ).fit(x_train, y_train)

    oof = [cross_val_predict(est, x_train, y_train, cv=cv, method="predict_proba") for _, est in members]
    features = stack_features(oof, task)
    meta = fit_meta(task, features, y_train, seed=0)

    # Binary: one P(class 1) column per member; multiclass: every class column per member.
    assert features.shape == (len(x_train), width)
    # Same out-of-fold features, so the same meta-learner, up to the features being float32 (what the
    # served graph takes): converged tightly, the two optima differ by ~5e-4 in the coefficients.
    np.testing.assert_allclose(meta.coef_, reference.final_estimator_.coef_, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(meta.intercept_, reference.final_estimator_.intercept_, rtol=2e-3, atol=2e-3)

    test_features = stack_features([est.predict_proba(x_test) for est in reference.estimators_], task)
    np.testing.assert_array_equal(meta.predict(test_features), reference.predict(x_test))
    np.testing.assert_allclose(meta.predict_proba(test_features), reference.predict_proba(x_test), atol=1e-4)


def test_stacking_meta_regressor_matches_stacking_regressor() -> None:
    x, y = load_diabetes(return_X_y=True)
    cv = KFold(n_splits=3, shuffle=True, random_state=0)
    members = [
        ("ridge", Ridge(alpha=1.0)),
        ("tree", DecisionTreeRegressor(max_depth=4, random_state=0)),
        ("knn", KNeighborsRegressor(n_neighbors=9)),
    ]
    reference = StackingRegressor(members, final_estimator=LinearRegression(positive=True), cv=cv).fit(x, y)

    oof = [cross_val_predict(est, x, y, cv=cv) for _, est in members]
    meta = fit_meta("regression", stack_features(oof, "regression"), y, seed=0)

    assert np.all(meta.coef_ >= 0)
    np.testing.assert_allclose(meta.coef_, reference.final_estimator_.coef_, rtol=1e-4, atol=1e-6)
    preds = stack_features([est.predict(x) for est in reference.estimators_], "regression")
    np.testing.assert_allclose(meta.predict(preds), reference.predict(x), rtol=1e-4)


def test_select_members_leaves_out_a_much_slower_candidate() -> None:
    names = ["a", "b", "c", "slow", "d"]
    scores = [0.9, 0.88, 0.87, 0.95, 0.86]
    chosen = select_members(names, scores, 0.5, np.eye(5), latencies=[50, 55, 60, 1400, 52])
    assert "slow" not in chosen and len(chosen) == 3
    # Without latencies the slow but best candidate leads.
    assert select_members(names, scores, 0.5, np.eye(5))[0] == "slow"
