"""Always-valid verdicts (service/stats/sequential.py), checked by simulation as /compare is used: a
look after every 50 labels up to 5,000. With equal models the sequential test calls "better" in at
most about 5% of runs (a fixed-sample McNemar test checked at every look does so far more often);
a challenger 5 points better is still found."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import betaln

from service.stats.sequential import always_valid_p, discordant_e_value, mixture_sprt_e_value

LOOKS = np.arange(50, 5001, 50)
RUNS = 1000


def _runs(rng: np.random.Generator, p_champion: float, p_challenger: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (only champion right, only challenger right) at each look, per run; the two models
    share half the rows' difficulty, as models of one table do."""
    shape = (RUNS, int(LOOKS[-1]))
    u = rng.random(shape)
    v = np.where(rng.random(shape) < 0.5, u, rng.random(shape))
    champion, challenger = u < p_champion, v < p_challenger
    b = np.cumsum(champion & ~challenger, axis=1)[:, LOOKS - 1]
    c = np.cumsum(~champion & challenger, axis=1)[:, LOOKS - 1]
    return b, c


def _sequential_better(b: np.ndarray, c: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    a = 5.0
    log_e = betaln(c + a, b + a) - betaln(a, a) + (b + c) * np.log(2.0)
    return ((log_e >= np.log(1 / alpha)) & (c > b)).any(axis=1)


def _fixed_better_at_any_look(b: np.ndarray, c: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    n = b + c
    # exact two-sided binomial p-value, as mcnemar() computes it, at every look
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(b, c), np.maximum(n, 1), 0.5))
    return ((p < alpha) & (c > b) & (n > 0)).any(axis=1)


def test_equal_models_watched_continuously_are_rarely_called_better() -> None:
    b, c = _runs(np.random.default_rng(11), 0.80, 0.80)
    sequential = _sequential_better(b, c).mean()
    fixed = _fixed_better_at_any_look(b, c).mean()
    print(
        f"equal models, 100 looks: sequential says better in {sequential:.1%} of runs, fixed McNemar {fixed:.1%}"
    )
    assert sequential <= 0.05 * 1.2  # "about 5%": within Monte Carlo error of 1,000 runs
    assert fixed > 2 * sequential, "the fixed-sample test checked at every look is the problem being solved"


def test_a_challenger_5_points_better_is_found() -> None:
    b, c = _runs(np.random.default_rng(12), 0.80, 0.85)
    power = _sequential_better(b, c).mean()
    print(f"challenger 5 points better: found by 5,000 labels in {power:.1%} of runs")
    assert power >= 0.9


def test_the_vectorised_simulation_is_the_e_value_the_service_computes() -> None:
    for b, c in [(0, 0), (10, 2), (120, 170), (300, 250)]:
        expected = np.exp(betaln(c + 5, b + 5) - betaln(5, 5) + (b + c) * np.log(2))
        assert discordant_e_value(b, c) == pytest.approx(expected)
    assert discordant_e_value(0, 0) == 1.0
    assert always_valid_p(40.0, comparisons=2) == pytest.approx(0.05)
    assert always_valid_p(0.5) == 1.0


def test_the_regression_sprt_finds_lower_errors_and_holds_its_level_when_watched() -> None:
    rng = np.random.default_rng(13)
    looks = range(50, 2001, 50)
    false_hits = hits = 0
    for _ in range(200):
        base = rng.normal(0, 1, 2000)
        champion = np.abs(base + rng.normal(0, 0.5, 2000))
        same = np.abs(base + rng.normal(0, 0.5, 2000))
        better = np.abs(0.85 * base + rng.normal(0, 0.5, 2000))
        false_hits += any(mixture_sprt_e_value(champion[:n] - same[:n]) >= 20 for n in looks)
        hits += any(mixture_sprt_e_value(champion[:n] - better[:n]) >= 20 for n in looks)
    assert false_hits / 200 <= 0.07
    assert hits / 200 >= 0.85
