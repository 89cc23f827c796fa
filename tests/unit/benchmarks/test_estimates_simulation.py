"""The accuracy estimate's interval covers the truth about as often as it claims (bounded version of
benchmarks/estimates.py), and the simulation shows it off under a shift the model cannot see."""

from __future__ import annotations

import pytest

from benchmarks.estimates import simulate


@pytest.mark.parametrize("scenario", ["none", "shift x1 +1 (seen)"])
def test_interval_covers_the_true_accuracy_about_95_percent(scenario: str) -> None:
    r = simulate(scenario, runs=300, validation_rows=1000, live_rows=2000, seed=1)
    assert 0.91 <= r.coverage <= 0.985, r
    assert abs(r.error) < 0.01, r


def test_a_shift_in_an_ignored_column_shows_how_far_off_the_estimate_is() -> None:
    r = simulate("shift x2 +1 (ignored)", runs=300, validation_rows=1000, live_rows=2000, seed=1)
    assert r.error > 0.02 and r.coverage < 0.6, r
