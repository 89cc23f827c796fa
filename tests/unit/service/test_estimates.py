"""service/stats/estimates.py on hand-made cases: no map, the labelled check, binary confidences."""

from __future__ import annotations

import numpy as np

from contract.estimation import confidence, expected_correct
from contract.manifest import AccuracyEstimator
from service.stats.estimates import accuracy_estimate, interval

MAP = AccuracyEstimator(confidence=[0.5, 0.9], correct=[0.6, 0.9], rows=400, accuracy=0.75)


def test_binary_confidence_is_the_probability_of_the_served_label() -> None:
    conf = confidence(np.array([1, 0, 1]), np.array([0.8, 0.3, 0.55]), binary=True)
    assert np.allclose(conf, [0.8, 0.7, 0.55])
    assert np.allclose(confidence(np.array([2, 0]), np.array([0.4, 0.9]), binary=False), [0.4, 0.9])


def test_map_is_linear_between_steps_and_clipped_beyond() -> None:
    assert np.allclose(expected_correct(MAP, np.array([0.3, 0.5, 0.7, 1.0])), [0.6, 0.6, 0.75, 0.9])


def test_no_estimator_says_why() -> None:
    doc = accuracy_estimate(None, True, None, None)
    assert doc["available"] is False and "rebuild" in doc["reason"]


def test_interval_shrinks_with_rows_but_not_below_the_maps_own_error() -> None:
    few = interval(np.full(10, 0.8), 400)
    many = interval(np.full(100_000, 0.8), 400)
    assert few is not None and many is not None
    assert many[2] - many[1] < few[2] - few[1]
    assert many[2] - many[1] > 2 * 1.9 * np.sqrt(0.16 / 400)  # the map's term stays
    assert interval(np.array([np.nan]), 400) is None


def test_labelled_check_recovers_the_served_labels_of_binary_answers() -> None:
    # scores P(class 1); hit = true label is 1; correct = served label is right
    score = np.array([0.9, 0.9, 0.2, 0.2], dtype=np.float32)
    hit = np.array([True, False, False, True])
    correct = np.array([True, False, True, False])
    doc = accuracy_estimate(MAP, True, (np.array([1.0]), np.array([0.9])), (score, hit, correct))
    check = doc["labelled_check"]
    # confidences 0.9, 0.9, 0.8, 0.8 -> P(right) 0.9, 0.9, 0.825, 0.825
    assert check["rows"] == 4 and abs(check["estimated"] - 0.8625) < 1e-6 and check["actual"] == 0.5
    assert doc["unlabelled"]["rows"] == 1 and abs(doc["unlabelled"]["accuracy"] - 0.9) < 1e-6
