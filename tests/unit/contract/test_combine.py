"""Combiner semantics: pinned against scikit-learn's own ensembles, then as properties.

The scikit-learn comparisons run our combiners on the outputs of the very members a fitted
VotingClassifier / VotingRegressor holds, so any difference is a difference in the combining rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import VotingClassifier, VotingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from contract.combine import apply_threshold, hard_vote, mean, soft_average, stack_features

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)
TIE_MARGIN = 1e-9


def assert_labels_equal_off_ties(
    ours: npt.NDArray[Any], theirs: npt.NDArray[Any], proba: npt.NDArray[Any]
) -> None:
    """Labels must be equal on every row whose top two probabilities differ by more than rounding."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > TIE_MARGIN
    np.testing.assert_array_equal(ours[clear], theirs[clear])


def _classifiers() -> list[tuple[str, Any]]:
    return [
        ("logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
        ("tree", DecisionTreeClassifier(max_depth=3, random_state=0)),
        ("nb", GaussianNB()),
    ]


# --- against scikit-learn -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["iris", "breast_cancer"])
@pytest.mark.parametrize("weights", [None, [3.0, 1.0, 2.0]])
def test_hard_vote_matches_voting_classifier(dataset: str, weights: list[float] | None) -> None:
    x, y = (load_iris if dataset == "iris" else load_breast_cancer)(return_X_y=True)
    voting = VotingClassifier(_classifiers(), voting="hard", weights=weights).fit(x, y)
    labels = np.stack([est.predict(x) for est in voting.estimators_])
    n_classes = len(voting.classes_)

    ours, shares = hard_vote(labels, n_classes, weights)

    np.testing.assert_array_equal(voting.classes_[ours], voting.predict(x))
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)


def test_hard_vote_of_two_members_breaks_real_ties_like_voting_classifier() -> None:
    x, y = load_iris(return_X_y=True)
    members = _classifiers()[1:]  # two members: every disagreement is an exact tie
    voting = VotingClassifier(members, voting="hard").fit(x, y)
    labels = np.stack([est.predict(x) for est in voting.estimators_])
    disagree = labels[0] != labels[1]
    assert disagree.any(), "the members must disagree somewhere for this test to mean anything"

    ours, shares = hard_vote(labels, 3)

    np.testing.assert_array_equal(ours, voting.predict(x))
    np.testing.assert_array_equal(ours[disagree], labels[:, disagree].min(axis=0))
    np.testing.assert_allclose(shares[disagree].max(axis=1), 0.5)


@pytest.mark.parametrize(
    ("constants", "weights", "winner"),
    [
        ([2, 1], None, 1),  # one vote each for 2 and 1: the lower index wins
        ([2, 1, 0], None, 0),  # a three-way tie
        ([2, 1, 0], [1.0, 1.0, 0.5], 1),  # weighted tie between 1 and 2
        ([2, 1, 0], [2.0, 1.0, 1.0], 2),  # the heavier member decides
        ([2, 1, 2, 1], [1.0, 2.0, 1.0, 2.0], 1),
    ],
)
def test_constructed_exact_ties_go_to_the_lowest_class_index(
    constants: list[int], weights: list[float] | None, winner: int
) -> None:
    x, y = load_iris(return_X_y=True)
    members = [(f"c{i}", DummyClassifier(strategy="constant", constant=c)) for i, c in enumerate(constants)]
    hard = VotingClassifier(members, voting="hard", weights=weights).fit(x, y)
    soft = VotingClassifier(members, voting="soft", weights=weights).fit(x, y)
    labels = np.stack([est.predict(x) for est in hard.estimators_])
    proba = np.stack([est.predict_proba(x) for est in soft.estimators_])

    vote, _ = hard_vote(labels, 3, weights)
    avg_labels, avg = soft_average(proba, weights)

    assert set(hard.predict(x)) == {winner}
    np.testing.assert_array_equal(vote, hard.predict(x))
    np.testing.assert_array_equal(avg_labels, soft.predict(x))
    np.testing.assert_allclose(avg, soft.predict_proba(x))


@pytest.mark.parametrize("dataset", ["iris", "breast_cancer"])
@pytest.mark.parametrize("weights", [None, [0.2, 0.5, 0.3]])
def test_soft_average_matches_voting_classifier(dataset: str, weights: list[float] | None) -> None:
    x, y = (load_iris if dataset == "iris" else load_breast_cancer)(return_X_y=True)
    voting = VotingClassifier(_classifiers(), voting="soft", weights=weights).fit(x, y)
    proba = np.stack([est.predict_proba(x) for est in voting.estimators_])

    labels, avg = soft_average(proba, weights)

    # The same weighted mean, so the same floats: labels agree even on exact ties.
    np.testing.assert_array_equal(avg, voting.predict_proba(x))
    np.testing.assert_array_equal(labels, voting.predict(x))


@pytest.mark.parametrize("n_members", [2, 3, 6, 9])
def test_soft_average_keeps_exact_ties_of_many_members(n_members: int) -> None:
    # Uniform members tie every class on every row; the lowest index must win on all of them, for
    # any member count (a BLAS dot product once rounded some rows differently by position).
    x, y = load_iris(return_X_y=True)
    members = [(f"u{i}", DummyClassifier(strategy="uniform")) for i in range(n_members)]
    voting = VotingClassifier(members, voting="soft").fit(x, y)
    proba = np.stack([est.predict_proba(x) for est in voting.estimators_])

    labels, avg = soft_average(proba)

    assert set(voting.predict(x)) == {0}
    np.testing.assert_array_equal(labels, np.zeros(len(x)))
    assert np.all(avg == avg[:, :1])


@pytest.mark.parametrize("weights", [None, [1.0, 3.0, 0.5]])
def test_mean_matches_voting_regressor(weights: list[float] | None) -> None:
    x, y = load_diabetes(return_X_y=True)
    members = [
        ("ridge", Ridge(alpha=1.0)),
        ("tree", DecisionTreeRegressor(max_depth=4, random_state=0)),
        ("knn", KNeighborsRegressor(n_neighbors=7)),
    ]
    voting = VotingRegressor(members, weights=weights).fit(x, y)
    preds = np.stack([est.predict(x) for est in voting.estimators_])

    np.testing.assert_allclose(mean(preds, weights), voting.predict(x), rtol=1e-12)
    # ONNX regressors answer (rows, 1): the same result from that shape.
    np.testing.assert_allclose(mean(preds[:, :, None], weights), voting.predict(x), rtol=1e-12)


# --- shapes, thresholds, stacking features --------------------------------------------------------


def test_stack_features_binary_keeps_p1_per_member_in_order() -> None:
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.6, 0.4], [0.3, 0.7]])
    feats = stack_features([a, b], "binary")
    assert feats.dtype == np.float32 and feats.flags.c_contiguous
    np.testing.assert_array_equal(feats, np.array([[0.1, 0.4], [0.8, 0.7]], dtype=np.float32))


def test_stack_features_multiclass_keeps_every_column_member_major() -> None:
    a = np.array([[0.7, 0.2, 0.1]])
    b = np.array([[0.1, 0.3, 0.6]])
    feats = stack_features([a, b], "multiclass")
    np.testing.assert_array_equal(feats, np.array([[0.7, 0.2, 0.1, 0.1, 0.3, 0.6]], dtype=np.float32))


def test_stack_features_regression_is_rows_by_members() -> None:
    preds = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    expected = np.array([[1, 4], [2, 5], [3, 6]], dtype=np.float32)
    np.testing.assert_array_equal(stack_features(preds, "regression"), expected)
    np.testing.assert_array_equal(stack_features(preds[:, :, None], "regression"), expected)


def test_apply_threshold() -> None:
    proba = np.array([[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_array_equal(apply_threshold(proba, None), [0, 0, 1])
    np.testing.assert_array_equal(apply_threshold(proba, 0.3), [1, 1, 1])
    np.testing.assert_array_equal(apply_threshold(proba, 0.5), [0, 1, 1])
    np.testing.assert_array_equal(apply_threshold(proba, 0.9), [0, 0, 0])
    # A threshold means nothing with three classes: argmax.
    three = np.array([[0.2, 0.5, 0.3]])
    np.testing.assert_array_equal(apply_threshold(three, 0.1), [1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hard_vote([0, 1], 2), r"expected labels of shape \(members, rows\)"),
        (lambda: hard_vote([[0, 2]], 2), r"labels must be class indices in \[0, 2\)"),
        (lambda: hard_vote([[0, -1]], 2), r"labels must be class indices"),
        (lambda: soft_average([[0.5, 0.5]]), r"expected probabilities of shape \(members, rows, classes\)"),
        (lambda: mean([1.0, 2.0]), r"expected values of shape \(members, rows\)"),
        (lambda: stack_features([[0.5, 0.5]], "binary"), r"expected outputs of shape"),
        (lambda: hard_vote([[0], [1]], 2, [1.0, -1.0]), r"weights must be finite, >= 0 and not all 0"),
        (lambda: hard_vote([[0], [1]], 2, [0.0, 0.0]), r"weights must be finite, >= 0 and not all 0"),
        (lambda: mean([[1.0], [2.0]], [1.0, float("nan")]), r"weights must be finite"),
    ],
)
def test_bad_shapes_and_weights_raise(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- properties ----------------------------------------------------------------------------------


@st.composite
def votes(draw: st.DrawFn) -> tuple[npt.NDArray[np.int64], int, list[float]]:
    """(members, rows) class indices, the class count, and small integer weights (exact in float)."""
    n_classes = draw(st.integers(2, 5))
    n_members = draw(st.integers(1, 7))
    n_rows = draw(st.integers(1, 12))
    labels = draw(hnp.arrays(np.int64, (n_members, n_rows), elements=st.integers(0, n_classes - 1)))
    weights = [float(w) for w in draw(st.lists(st.integers(1, 5), min_size=n_members, max_size=n_members))]
    return labels, n_classes, weights


@st.composite
def probabilities(draw: st.DrawFn) -> tuple[npt.NDArray[np.float64], list[float]]:
    """(members, rows, classes) probabilities from integer counts, and small integer weights."""
    n_members = draw(st.integers(1, 6))
    n_rows = draw(st.integers(1, 10))
    n_classes = draw(st.integers(2, 4))
    counts = draw(hnp.arrays(np.int64, (n_members, n_rows, n_classes), elements=st.integers(1, 10)))
    proba = counts / counts.sum(axis=2, keepdims=True)
    weights = [float(w) for w in draw(st.lists(st.integers(1, 5), min_size=n_members, max_size=n_members))]
    return proba, weights


@PROPERTY_SETTINGS
@given(votes())
def test_vote_shares_sum_to_one(case: tuple[npt.NDArray[np.int64], int, list[float]]) -> None:
    labels, n_classes, weights = case
    for w in (None, weights):
        winners, shares = hard_vote(labels, n_classes, w)
        assert shares.shape == (labels.shape[1], n_classes)
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(winners, shares.argmax(axis=1))


@PROPERTY_SETTINGS
@given(votes(), st.randoms(use_true_random=False))
def test_hard_vote_ignores_member_order(
    case: tuple[npt.NDArray[np.int64], int, list[float]], rnd: Any
) -> None:
    labels, n_classes, weights = case
    order = list(range(len(weights)))
    rnd.shuffle(order)
    winners, shares = hard_vote(labels, n_classes, weights)
    p_winners, p_shares = hard_vote(labels[order], n_classes, [weights[i] for i in order])
    np.testing.assert_array_equal(p_winners, winners)
    np.testing.assert_array_equal(p_shares, shares)


@PROPERTY_SETTINGS
@given(probabilities(), st.randoms(use_true_random=False))
def test_soft_average_ignores_member_order(
    case: tuple[npt.NDArray[np.float64], list[float]], rnd: Any
) -> None:
    proba, weights = case
    order = list(range(len(weights)))
    rnd.shuffle(order)
    labels, avg = soft_average(proba, weights)
    p_labels, p_avg = soft_average(proba[order], [weights[i] for i in order])
    np.testing.assert_allclose(p_avg, avg, rtol=0, atol=1e-12)
    assert_labels_equal_off_ties(p_labels, labels, avg)


@PROPERTY_SETTINGS
@given(votes(), probabilities(), st.sampled_from([0.25, 0.5, 2.0, 3.0, 10.0, 1000.0]))
def test_scaling_every_weight_changes_nothing(
    vote_case: tuple[npt.NDArray[np.int64], int, list[float]],
    proba_case: tuple[npt.NDArray[np.float64], list[float]],
    factor: float,
) -> None:
    labels, n_classes, weights = vote_case
    scaled = [w * factor for w in weights]
    for ours, scaled_result in zip(
        hard_vote(labels, n_classes, weights), hard_vote(labels, n_classes, scaled), strict=True
    ):
        np.testing.assert_array_equal(scaled_result, ours)

    proba, p_weights = proba_case
    p_scaled = [w * factor for w in p_weights]
    labels, avg = soft_average(proba, p_weights)
    s_labels, s_avg = soft_average(proba, p_scaled)
    np.testing.assert_allclose(s_avg, avg, rtol=0, atol=1e-12)
    assert_labels_equal_off_ties(s_labels, labels, avg)

    values = proba[:, :, 0]
    np.testing.assert_allclose(mean(values, p_scaled), mean(values, p_weights), rtol=1e-12)


@PROPERTY_SETTINGS
@given(
    st.integers(2, 6),
    st.integers(1, 7),
    st.data(),
)
def test_unanimous_vote_returns_that_class(n_classes: int, n_members: int, data: st.DataObject) -> None:
    row_labels = data.draw(
        hnp.arrays(np.int64, data.draw(st.integers(1, 10)), elements=st.integers(0, n_classes - 1))
    )
    weights = data.draw(st.lists(st.floats(0.01, 100.0), min_size=n_members, max_size=n_members) | st.none())
    labels = np.tile(row_labels, (n_members, 1))
    winners, shares = hard_vote(labels, n_classes, weights)
    np.testing.assert_array_equal(winners, row_labels)
    np.testing.assert_allclose(shares[np.arange(len(row_labels)), row_labels], 1.0)


@PROPERTY_SETTINGS
@given(probabilities(), st.integers(1, 6), st.booleans())
def test_soft_average_of_identical_members_is_that_member(
    case: tuple[npt.NDArray[np.float64], list[float]], copies: int, weighted: bool
) -> None:
    member = case[0][0]
    weights = [float(i + 1) for i in range(copies)] if weighted else None
    labels, avg = soft_average(np.stack([member] * copies), weights)
    np.testing.assert_allclose(avg, member, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(labels, member.argmax(axis=1))


@PROPERTY_SETTINGS
@given(
    st.integers(2, 6),
    st.data(),
    st.integers(1, 4),
)
def test_hard_vote_tie_goes_to_the_lowest_index(n_classes: int, data: st.DataObject, per_side: int) -> None:
    a, b = data.draw(
        st.lists(st.integers(0, n_classes - 1), min_size=2, max_size=2, unique=True), label="classes"
    )
    members = data.draw(st.permutations([a] * per_side + [b] * per_side), label="members")
    labels = np.array(members, dtype=np.int64)[:, None]
    winners, shares = hard_vote(labels, n_classes)
    assert winners.tolist() == [min(a, b)]
    assert shares[0, a] == shares[0, b] == 0.5


@PROPERTY_SETTINGS
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 10)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
    st.data(),
)
def test_mean_lies_within_the_members(values: npt.NDArray[np.float64], data: st.DataObject) -> None:
    n_members = values.shape[0]
    weights = data.draw(
        st.lists(st.floats(0.0, 100.0, allow_subnormal=False), min_size=n_members, max_size=n_members).filter(
            lambda w: sum(w) > 0
        )
        | st.none()
    )
    out = mean(values, weights)
    slack = 1e-9 * max(1.0, float(np.abs(values).max()))
    assert out.shape == (values.shape[1],)
    assert np.all(out >= values.min(axis=0) - slack)
    assert np.all(out <= values.max(axis=0) + slack)


@PROPERTY_SETTINGS
@given(st.integers(1, 6), st.integers(0, 8))
def test_weight_count_mismatch_names_both_counts(n_members: int, n_weights: int) -> None:
    if n_weights == n_members:
        n_weights += 1
    weights = [1.0] * n_weights
    message = f"expected {n_members} weights, got {n_weights}"
    with pytest.raises(ValueError, match=message):
        hard_vote(np.zeros((n_members, 3), dtype=np.int64), 2, weights)
    with pytest.raises(ValueError, match=message):
        soft_average(np.full((n_members, 3, 2), 0.5), weights)
    with pytest.raises(ValueError, match=message):
        mean(np.zeros((n_members, 3)), weights)
