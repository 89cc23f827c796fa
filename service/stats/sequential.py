"""Always-valid champion-vs-challenger tests: verdicts that stay honest however often /compare is read.

A fixed-sample test (McNemar) checked after every batch of labels calls "better" far more often than
its 5%. These tests give an e-value E_n: a nonnegative martingale with mean 1 when the models are
equally good, so by Ville's inequality P(E_n ever reaches 1/alpha) <= alpha, at every look and at any
stopping rule (Robbins 1970; Howard, Ramdas, McAuliffe, Sekhon 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences"). ``min(1, 1/E_n)`` is an always-valid p-value.

- Classification: on the rows exactly one of the two is right (McNemar's discordant pairs), the
  challenger is the one with probability theta; equal accuracy is theta = 1/2. E_n is the likelihood
  ratio of a Beta(a, a) mixture over theta against theta = 1/2 (exact, no approximation), which is
  symmetric, so one e-value serves both directions.
- Regression: the mixture SPRT of Johari, Pekelis, Walsh (2017, "Always valid inference") on the
  paired differences of absolute errors, with a normal mixture of scale ``TAU`` standard deviations;
  the variance is estimated from the data, so this one is valid asymptotically.

Several challengers: Bonferroni on e-values (reject when E_n >= m / alpha), valid for any dependence.
tests/unit/service/test_sequential.py checks by simulation that, with equal models and a look after
every 50 labels up to 5,000, "better" is declared in at most about 5% of runs while a challenger 5
points better is found.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.special import betaln

PRIOR_A = 5.0
"""Beta(a, a) mixing prior: spread (sd 0.15 around 1/2) for the share of discordant rows the
challenger wins when it is a few points better or worse."""
TAU = 0.2
"""Regression: the mixture's scale, in standard deviations of the paired difference."""
MAX_LOG_E = 700.0


def discordant_e_value(champion_only: int, challenger_only: int, a: float = PRIOR_A) -> float:
    """E-value against "equally accurate" from McNemar's counts (b = only the champion right,
    c = only the challenger right)."""
    b, c = champion_only, challenger_only
    log_e = betaln(c + a, b + a) - betaln(a, a) + (b + c) * math.log(2.0)
    return math.exp(min(float(log_e), MAX_LOG_E))


def mixture_sprt_e_value(differences: npt.NDArray[np.float64], tau: float = TAU) -> float:
    """E-value against "equal mean absolute error" from paired differences (champion minus
    challenger): the normal-mixture SPRT with the variance estimated from the differences."""
    n = len(differences)
    if n < 2:
        return 1.0
    var = float(np.var(differences, ddof=1))
    if var <= 0:
        return 1.0
    mean = float(np.mean(differences))
    t2 = (tau**2) * var
    log_e = 0.5 * math.log(var / (var + n * t2)) + (n**2 * t2 * mean**2) / (2 * var * (var + n * t2))
    return math.exp(min(log_e, MAX_LOG_E))


def always_valid_p(e_value: float, comparisons: int = 1) -> float:
    """The always-valid p-value of an e-value, Bonferroni-adjusted over ``comparisons``."""
    return min(1.0, comparisons / e_value) if e_value > 0 else 1.0
