"""Metrics, the cost-based threshold, the Pareto front and the one-standard-error champion rule."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from builders.scoring import (
    Candidate,
    choose_champion,
    choose_threshold,
    classification_metrics,
    expected_cost,
    oriented,
    pareto_front,
    primary_metric,
    regression_metrics,
    standard_error,
)

# --- cost and threshold --------------------------------------------------------------------------

# P(class 1) and truth, by hand: with a false negative 5x as costly as a false positive,
#   t < 0.1  -> all positive: 3 FP                                  cost 3/6
#   t in (0.1, 0.3] (incl. the Bayes threshold 1/6): 2 FP          cost 2/6
#   t in (0.3, 0.4]: 1 FP (the 0.6 negative)                       cost 1/6   <- best
#   t in (0.4, 0.6]: 1 FP + 1 FN                                   cost 6/6
P1 = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
Y = np.array([0, 0, 1, 0, 1, 1])


def test_expected_cost_by_hand() -> None:
    labels = np.array([1, 1, 0, 0, 1, 1])  # FP at 0 and 1, FN at 2
    assert expected_cost(Y, labels, 1.0, 5.0) == pytest.approx((2 * 1 + 1 * 5) / 6)
    assert expected_cost(Y, Y, 1.0, 5.0) == 0.0


def test_choose_threshold_minimises_cost_on_a_hand_example() -> None:
    threshold = choose_threshold(P1, Y, 1.0, 5.0)
    assert threshold == pytest.approx(0.35)
    assert expected_cost(Y, (threshold <= P1).astype(int), 1.0, 5.0) == pytest.approx(1 / 6)


def test_choose_threshold_moves_with_the_costs() -> None:
    # Expensive false positives: predicting positive only above 0.6 avoids both FPs on the right.
    threshold = choose_threshold(P1, Y, 10.0, 1.0)
    assert 0.6 < threshold <= 0.8
    assert expected_cost(Y, (threshold <= P1).astype(int), 10.0, 1.0) == pytest.approx(1 / 6)


def test_choose_threshold_breaks_cost_ties_towards_the_bayes_threshold() -> None:
    # Perfectly separated: every threshold in (0.2, 0.8] costs 0; the pick is the one nearest 1/(1+1).
    p1 = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([0, 0, 1, 1])
    assert choose_threshold(p1, y, 1.0, 1.0) == pytest.approx(0.5)
    assert choose_threshold(p1, y, 1.0, 3.0) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("p1", "fp_cost", "fn_cost"),
    [
        ([0.3, 0.30000001, 0.9], 1.0, 1.0),
        # Saturated float32 outputs of a confident model, and a very costly false negative.
        (np.array([1e-8, 3e-8, 0.5], dtype=np.float32), 1.0, 1000.0),
    ],
)
def test_the_threshold_keeps_its_decision_on_nearly_equal_probabilities(
    p1: list[float] | npt.NDArray[np.float32], fp_cost: float, fn_cost: float
) -> None:
    # Rows 1 and 2 are positive, row 0 is not: the best threshold sits between p1[0] and p1[1].
    probs = np.asarray(p1, dtype=np.float64)
    y = np.array([0, 1, 1])
    threshold = choose_threshold(probs, y, fp_cost, fn_cost)
    np.testing.assert_array_equal((threshold <= probs).astype(int), y)
    assert expected_cost(y, (threshold <= probs).astype(int), fp_cost, fn_cost) == 0.0


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 30).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, n, elements=st.floats(0.001, 0.999)),
            hnp.arrays(np.int64, n, elements=st.integers(0, 1)),
        )
    ),
    st.floats(0.1, 10.0),
    st.floats(0.1, 10.0),
)
def test_no_threshold_in_a_fine_grid_costs_less(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]], fp: float, fn: float
) -> None:
    p1, y = case
    chosen = choose_threshold(p1, y, fp, fn)
    best = expected_cost(y, (p1 >= chosen).astype(int), fp, fn)
    grid = np.concatenate([np.linspace(0.0005, 1.0, 401), p1])
    others = [expected_cost(y, (p1 >= t).astype(int), fp, fn) for t in grid]
    assert best <= min(others) + 1e-12
    assert 0.0 < chosen <= 1.0


# --- metrics -------------------------------------------------------------------------------------


def test_classification_metrics_binary_with_costs() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    labels = proba.argmax(axis=1)
    out = classification_metrics(y, proba, labels, 2, costs=(1.0, 5.0))
    assert out["accuracy"] == 0.5
    assert out["f1"] == pytest.approx(0.5)
    assert out["roc_auc"] == pytest.approx(0.75)
    assert out["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.7, 0.4])))
    assert out["cost"] == pytest.approx((1 + 5) / 4)


def test_classification_metrics_survive_zero_probabilities_and_absent_classes() -> None:
    y = np.array([0, 0, 1, 1])  # class 2 never occurs in this split
    proba = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = classification_metrics(y, proba, proba.argmax(axis=1), 3)
    assert math.isfinite(out["log_loss"])
    assert "roc_auc" not in out
    assert "cost" not in out


def test_regression_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([[1.0], [2.0], [3.0], [6.0]])  # ONNX regressors answer (rows, 1)
    out = regression_metrics(y, pred)
    assert out["rmse"] == pytest.approx(1.0)
    assert out["mae"] == pytest.approx(0.5)
    assert out["r2"] == pytest.approx(1 - 4 / 5)


def test_primary_metric_and_orientation() -> None:
    assert primary_metric("binary") == primary_metric("multiclass") == "accuracy"
    assert primary_metric("regression") == "rmse"
    assert oriented("accuracy", 0.9) == 0.9
    assert oriented("rmse", 3.0) == -3.0
    assert oriented("log_loss", 0.2) == -0.2


# --- Pareto front and champion -------------------------------------------------------------------


def test_pareto_front() -> None:
    points = [
        ("accurate", 0.95, 400.0),
        ("fast", 0.80, 10.0),
        ("middle", 0.90, 100.0),
        ("dominated", 0.85, 150.0),  # middle is better and faster
        ("slow_twin", 0.95, 500.0),  # as good as accurate, but slower
        ("twin", 0.95, 400.0),  # identical to accurate: neither dominates the other
    ]
    assert pareto_front(points) == {"accurate", "twin", "fast", "middle"}
    assert pareto_front([("only", 0.5, 1.0)]) == {"only"}


def test_standard_error() -> None:
    assert standard_error("accuracy", 0.9, 100) == pytest.approx(0.03)
    assert standard_error("rmse", 10.0, 50) == pytest.approx(1.0)
    assert standard_error("accuracy", 0.9, 1) == math.inf
    # A perfect score still has sampling error: as if one row in n could have been wrong.
    assert standard_error("accuracy", 1.0, 100) == pytest.approx(math.sqrt(0.01 / 100))


def _candidates(rows: list[tuple[str, float, float, bool]]) -> list[Candidate]:
    return [Candidate(name=n, validation_score=s, latency_us=lat, eligible=e) for n, s, lat, e in rows]


def test_champion_is_the_fastest_within_one_standard_error() -> None:
    # Best accuracy 0.90 on 100 rows: SE 0.03, so anything >= 0.87 qualifies.
    pool = _candidates(
        [
            ("best", 0.90, 500.0, True),
            ("close", 0.88, 50.0, True),
            ("too_far", 0.85, 10.0, True),
            ("baseline", 0.60, 1.0, False),
        ]
    )
    name, rule = choose_champion(pool, "accuracy", 100)
    assert name == "close"
    assert "one standard error (0.0300)" in rule
    assert "best: 0.9000" in rule


def test_champion_rule_for_rmse_prefers_lower() -> None:
    # Best RMSE 50 on 50 rows: SE 50 / sqrt(100) = 5, so anything <= 55 qualifies.
    pool = _candidates([("best", 50.0, 100.0, True), ("near", 54.0, 20.0, True), ("far", 56.0, 5.0, True)])
    assert choose_champion(pool, "rmse", 50)[0] == "near"


def test_champion_latency_tie_goes_to_the_better_score() -> None:
    pool = _candidates([("a", 0.89, 10.0, True), ("b", 0.90, 10.0, True)])
    assert choose_champion(pool, "accuracy", 100)[0] == "b"


def test_champion_ignores_ineligible_models_even_when_best() -> None:
    pool = _candidates([("failed_parity", 0.99, 1.0, False), ("ok", 0.80, 100.0, True)])
    assert choose_champion(pool, "accuracy", 100)[0] == "ok"


def test_no_eligible_champion_raises() -> None:
    with pytest.raises(ValueError, match="no eligible candidate"):
        choose_champion(_candidates([("x", 0.9, 1.0, False)]), "accuracy", 100)


def test_threshold_separates_probabilities_one_float_apart() -> None:
    # Found by hypothesis: the midpoint of two adjacent floats rounds onto the lower one.
    low = 0.001
    high = float(np.nextafter(low, 1.0))
    p1 = np.array([high, low])
    y = np.array([1, 0])
    t = choose_threshold(p1, y, 1.0, 1.0)
    assert expected_cost(y, (p1 >= t).astype(int), 1.0, 1.0) == 0.0


def test_latency_noise_cannot_change_the_champion() -> None:
    """Within 1.5x of the fastest, models are equally fast: the better validation score wins, however
    the timing of a busy machine orders them."""
    for fast, slow in [(10.0, 14.0), (14.0, 10.0)]:
        pool = _candidates([("logreg", 0.89, fast, True), ("hist_gb", 0.90, slow, True)])
        assert choose_champion(pool, "accuracy", 100)[0] == "hist_gb"
    pool = _candidates([("logreg", 0.89, 10.0, True), ("hist_gb", 0.90, 16.0, True)])
    assert choose_champion(pool, "accuracy", 100)[0] == "logreg", "clearly faster still wins"


def test_equally_fast_and_equally_good_goes_to_the_smaller_graph() -> None:
    pool = [
        Candidate(name="knn", validation_score=0.99, latency_us=15.8, eligible=True, size_bytes=90_000),
        Candidate(name="logreg", validation_score=0.99, latency_us=13.0, eligible=True, size_bytes=2_000),
    ]
    assert choose_champion(pool, "accuracy", 114)[0] == "logreg"


def _rows(name: str, correct: np.ndarray, p_true: np.ndarray, latency: float) -> Candidate:
    return Candidate(
        name=name,
        validation_score=float(correct.mean()),
        latency_us=latency,
        eligible=True,
        correct=correct,
        log_loss=-np.log(np.clip(p_true, 1e-6, 1.0)),
    )


def test_paired_rule_does_not_keep_a_cheap_model_clearly_behind_on_the_same_rows() -> None:
    """The issue's 7-class table: 151 validation rows, a tree 0.07 accuracy and 0.2 log loss behind a
    forest. One unpaired standard error (0.04) let the faster tree win; on the same rows the forest is
    right wherever the tree is, and more, so the paired difference is far beyond noise."""
    rng = np.random.default_rng(0)
    forest_right = rng.random(151) < 0.80
    tree_right = forest_right & (rng.random(151) < 0.91)  # ~0.07 fewer right, never right alone
    forest = _rows("forest", forest_right, np.where(forest_right, 0.7, 0.2), latency=60.0)
    tree = _rows("tree", tree_right, np.where(tree_right, 0.55, 0.15), latency=10.0)
    gap = forest_right.mean() - tree_right.mean()
    assert 0.04 < gap < 0.1 and gap < 0.04 + standard_error("accuracy", forest_right.mean(), 151) + 0.03
    name, rule = choose_champion([forest, tree], "accuracy", 151)
    assert name == "forest" and "paired standard errors" in rule


def test_paired_rule_keeps_a_cheaper_model_level_on_accuracy_and_log_loss() -> None:
    rng = np.random.default_rng(1)
    right = rng.random(300) < 0.85
    p = np.where(right, 0.8, 0.3)
    a = _rows("big", right, p, latency=80.0)
    flips = right.copy()
    flips[:2] = ~flips[:2]  # two rows of 300 differ: noise
    b = _rows("small", flips, np.where(flips, 0.8, 0.3), latency=10.0)
    assert choose_champion([a, b], "accuracy", 300)[0] == "small"


def test_paired_rule_refuses_a_model_as_accurate_but_much_worse_calibrated() -> None:
    rng = np.random.default_rng(2)
    right = rng.random(300) < 0.85
    good = _rows("calibrated", right, np.where(right, 0.8, 0.3), latency=80.0)
    bad = _rows("overconfident", right, np.where(right, 0.99, 0.001), latency=10.0)
    name, _ = choose_champion([good, bad], "accuracy", 300)
    assert name == "calibrated"


def test_a_hard_votes_vote_shares_are_never_the_log_loss_reference() -> None:
    """A unanimous vote's 'probability' is 1: a zero log loss no real probability model can approach."""
    right = np.ones(40, dtype=bool)
    vote = dataclasses.replace(_rows("vote", right, np.ones(40), latency=90.0), vote_shares=True)
    logreg = _rows("logreg", right, np.full(40, 0.9), latency=10.0)
    name, rule = choose_champion([vote, logreg], "accuracy", 40)
    assert name == "logreg" and "lowest (logreg" in rule


def test_paired_rule_for_regression_keeps_a_cheap_model_only_within_noise() -> None:
    """Squared errors on the same rows: a model a little worse on a few rows is level; one worse on
    every row by a clear margin is not, however much faster it is."""
    rng = np.random.default_rng(3)
    err = rng.normal(0, 10, 400)
    best = Candidate("forest", 10.0, 90.0, True, sq_error=err**2)
    noisy = err.copy()
    noisy[:3] *= 1.5
    level = Candidate("ridge", 10.1, 10.0, True, sq_error=noisy**2)
    behind = Candidate("tree", 12.0, 5.0, True, sq_error=(np.abs(err) + 3.0) ** 2)
    name, rule = choose_champion([best, level], "rmse", 400, "out-of-fold")
    assert name == "ridge" and "out-of-fold squared error over 400 rows" in rule
    assert choose_champion([best, behind], "rmse", 400)[0] == "forest"


def test_a_learning_curve_point_whose_fits_fail_is_left_out_not_written_as_nan() -> None:
    """A 7-class table's smallest subset can miss a class, which XGBoost refuses: that size scores NaN
    in scikit-learn's learning curve, and a NaN in a card is a card the service cannot load."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline

    from builders.search import learning_points

    class NeedsRows(ClassifierMixin, BaseEstimator):
        def fit(self, x: Any, y: Any) -> NeedsRows:
            if len(x) < 100:
                raise ValueError("too few rows")
            self.classes_ = np.unique(y)
            return self

        def predict(self, x: Any) -> Any:
            return np.full(len(x), self.classes_[0])

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 2)), rng.integers(0, 2, 300)
    # quietly: the failed sizes are left out, nothing for the user to act on (warnings are errors here)
    points, _ = learning_points(
        Pipeline([("model", NeedsRows())]), x, y, task="binary",
        cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=1,
    )  # fmt: skip
    assert [p.train_rows for p in points] == [120, 160, 200]  # 40 and 80 rows failed
    assert all(math.isfinite(p.score) and math.isfinite(p.score_std) for p in points)


def test_a_hard_vote_is_champion_only_when_no_model_with_probabilities_is_near() -> None:
    """digits: the vote led out-of-fold accuracy and its log loss (vote shares) was "near" the stack's
    only through the noise of its few confident misses; served, its probabilities were 4x worse."""
    rng = np.random.default_rng(4)
    right = rng.random(1000) < 0.97
    vote = dataclasses.replace(
        _rows("vote", right, np.where(right, 0.8, 0.2), latency=10.0), vote_shares=True
    )
    stack = _rows("stack", right, np.where(right, 0.8, 0.2), latency=14.0)
    name, rule = choose_champion([vote, stack], "accuracy", 1000)
    assert name == "stack" and "a hard vote only when no model with probabilities is near" in rule
    lone = choose_champion(
        [vote, _rows("tree", right & (rng.random(1000) < 0.8), np.full(1000, 0.5), 1.0)], "accuracy", 1000
    )
    assert lone[0] == "vote"  # nothing with probabilities is near: the vote may still win
