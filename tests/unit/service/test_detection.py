"""Online detection statistics: flags recovered from correctness and truth, average precision equal to
scikit-learn's (ties included), the paired recall test's counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from service.stats.detection import (
    average_precision,
    average_precision_interval,
    detection_row,
    flags,
    paired_recall,
)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_is_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    hit = rng.random(300) < 0.1
    score = np.round(rng.random(300) + hit * 0.3, 1)  # rounded: many ties
    assert average_precision(score, hit) == pytest.approx(average_precision_score(hit, score), abs=1e-12)
    assert average_precision(score, np.zeros(300, dtype=bool)) is None


def test_flags_precision_and_recall_from_outcomes() -> None:
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    flagged = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    correct = flagged == truth
    assert (flags(correct, truth) == flagged).all()

    row = detection_row(correct, flagged.astype(float), truth, {"precision": 0.5})

    assert (row["positives"], row["flagged"]) == (3, 3)
    assert row["precision"] == pytest.approx(2 / 3) and row["recall"] == pytest.approx(2 / 3)
    assert row["precision_low"] < 2 / 3 < row["precision_high"] and row["offline_precision"] == 0.5


def test_paired_recall_counts_the_anomalies_only_one_model_flagged() -> None:
    keys = np.arange(10, dtype=np.int64)
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    a = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=bool)

    out = paired_recall(keys, a, keys.copy(), b, truth)

    assert out["anomalies"] == 4 and out["only_champion_flagged"] == 2 and out["only_challenger_flagged"] == 0
    assert out["champion_recall"] == 0.75 and out["challenger_recall"] == 0.25
    assert 0 < out["p_value"] <= 1


def test_the_average_precision_interval_covers_the_population_value() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        hit = rng.random(n) < 0.1
        return rng.normal(size=n) + 1.5 * hit, hit

    truth = average_precision(*draw(400_000))
    assert truth is not None
    covered = 0
    for _ in range(300):
        iv = average_precision_interval(*draw(400))
        assert iv.low is not None and iv.high is not None and iv.low <= iv.value <= iv.high  # type: ignore[operator]
        covered += iv.low <= truth <= iv.high
    assert 0.88 <= covered / 300 <= 0.99, covered / 300
