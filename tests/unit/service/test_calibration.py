"""Calibration offline and online (contract/calibration.py, service/stats/calibration.py): values by
hand, intervals that cover the truth on simulated calibrated and overconfident models."""

from __future__ import annotations

import numpy as np
import pytest

from contract import calibration as cal
from service.stats.calibration import online_calibration


def test_values_by_hand() -> None:
    score = np.array([0.05, 0.15, 0.85, 0.95])
    hit = np.array([False, True, True, True])
    assert cal.brier(score, hit) == pytest.approx((0.05**2 + 0.85**2 + 0.15**2 + 0.05**2) / 4)
    # bins [0, .1): gap |0.05 - 0|; [.1, .2): |0.15 - 1|; [.8, .9): |0.85 - 1|; [.9, 1]: |0.95 - 1|
    assert cal.ece(score, hit) == pytest.approx((0.05 + 0.85 + 0.15 + 0.05) / 4)
    bins = cal.reliability(score, hit)
    assert sum(b["n"] for b in bins) == 4 and bins[1] == {
        "low": 0.1,
        "high": 0.2,
        "n": 1,
        "mean_score": 0.15,
        "observed": 1.0,
    }
    assert cal.binary_log_loss(np.array([0.5]), np.array([True])) == pytest.approx(np.log(2))
    s, h = cal.targets(np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]), np.array([1, 1]))
    assert s.tolist() == [0.7, 0.6] and h.tolist() == [True, False]  # top-label for 3 classes


def test_online_intervals_cover_a_calibrated_model_and_expose_an_overconfident_one() -> None:
    rng = np.random.default_rng(0)
    covered_brier = 0
    for _ in range(100):
        p = rng.beta(2, 2, 3000)
        hit = rng.random(3000) < p
        out = online_calibration(p, hit, binary=True, offline={"brier": 0.2})
        truth = float(np.mean(p * (1 - p)))  # expected Brier of a calibrated model
        covered_brier += out["brier_low"] <= truth <= out["brier_high"]
        assert out["ece_low"] < 0.03 and out["offline_brier"] == 0.2 and out["log_loss"] > 0
    assert covered_brier >= 90
    p = rng.beta(2, 2, 3000)
    hit = rng.random(3000) < p
    over = np.clip(0.5 + 1.6 * (p - 0.5), 0.001, 0.999)  # says 0.9 when it is right 75% of the time
    out = online_calibration(over, hit, binary=True, offline={})
    assert out["ece_low"] > 0.05 and out["of"] == "P(class 1)"


def test_missing_scores_are_left_out() -> None:
    out = online_calibration(
        np.array([np.nan, 0.8, 0.2]), np.array([True, True, False]), binary=False, offline={}
    )
    assert out["n"] == 2 and "log_loss" not in out and out["of"] == "top-label confidence"
