"""Intervals and paired tests for live evaluation: pure functions of outcome arrays (numpy, scipy).

Accuracy carries a Wilson interval, RMSE a t-interval on squared errors; the champion is compared with
each other model on the rows both answered (exact McNemar, or Wilcoxon on absolute errors), with Holm's
adjustment across comparisons and an estimate of the labels still needed at 80% power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval and sample size."""

    value: float | None
    low: float | None
    high: float | None
    n: int


def accuracy_interval(correct: int, n: int) -> Interval:
    """Accuracy with a 95% Wilson score interval."""
    if n == 0:
        return Interval(None, None, None, 0)
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return Interval(correct / n, float(ci.low), float(ci.high), n)


def rmse_interval(errors: npt.NDArray[np.float64]) -> Interval:
    """RMSE with a 95% interval from a t-interval on the squared errors."""
    n = len(errors)
    if n == 0:
        return Interval(None, None, None, 0)
    sq = errors**2
    mse = float(sq.mean())
    if n < 2:
        return Interval(math.sqrt(mse), None, None, n)
    half = float(stats.t.ppf(0.975, n - 1) * sq.std(ddof=1) / math.sqrt(n))
    return Interval(math.sqrt(mse), math.sqrt(max(mse - half, 0.0)), math.sqrt(mse + half), n)


@dataclass(frozen=True)
class PairedTest:
    """Champion against one other model on the same labelled rows."""

    challenger: str
    n: int
    champion_score: float | None
    challenger_score: float | None
    statistic: dict[str, float]
    p_value: float | None
    p_adjusted: float | None = None
    verdict: str = ""
    labels_needed: int | None = None
    e_value: float | None = None
    """The always-valid test's e-value (service/stats/sequential.py); the verdict rests on it."""


def mcnemar(
    champion_correct: npt.NDArray[np.bool_], challenger_correct: npt.NDArray[np.bool_]
) -> tuple[int, int, float]:
    """(b, c, exact two-sided p): b = only the champion right, c = only the challenger right."""
    b = int(np.sum(champion_correct & ~challenger_correct))
    c = int(np.sum(~champion_correct & challenger_correct))
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return b, c, p


def mcnemar_labels_needed(b: int, c: int, n: int) -> int | None:
    """Labelled rows for 80% power at 5% if the observed discordance holds (Connor, 1987); None if no
    difference has been observed yet."""
    if n == 0 or b == c:
        return None
    pd = (b + c) / n
    delta = abs(c - b) / n
    za, zb = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(POWER)
    inner = max(pd - delta**2, 1e-12)
    return math.ceil(((za * math.sqrt(pd) + zb * math.sqrt(inner)) ** 2) / delta**2)


def paired_errors_test(
    champion_abs: npt.NDArray[np.float64], challenger_abs: npt.NDArray[np.float64]
) -> tuple[float, float, int | None]:
    """(mean |e_champion| - |e_challenger|, Wilcoxon p, rows for 80% power by a paired t approximation)."""
    d = champion_abs - challenger_abs
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    if n < 2 or not np.any(d != 0):
        return mean, 1.0, None
    p = float(stats.wilcoxon(d, zero_method="zsplit").pvalue)
    sd = float(d.std(ddof=1))
    needed = None
    if mean != 0 and sd > 0:
        za, zb = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(POWER)
        needed = math.ceil(((za + zb) * sd / abs(mean)) ** 2)
    return mean, p, needed


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None)."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    ordered = sorted(idx, key=lambda i: p_values[i])  # type: ignore[arg-type,return-value]
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(ordered)
    for rank, i in enumerate(ordered):
        p = p_values[i]
        assert p is not None
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def verdict(better_for_challenger: bool | None, p_adjusted: float | None, n: int, needed: int | None) -> str:
    """The comparison in words."""
    if n == 0 or p_adjusted is None:
        return "no labelled rows answered by both yet"
    if p_adjusted < ALPHA and better_for_challenger is not None:
        return "challenger is better" if better_for_challenger else "challenger is worse"
    if needed is None:
        return "no significant difference yet (no difference observed so far)"
    more = max(needed - n, 0)
    if more == 0:
        return "no significant difference (enough labels to see the observed gap: likely none)"
    return f"no significant difference yet (~{more} more labels to decide if the observed gap holds)"


def kendall(offline: Sequence[float], online: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall's tau between offline and online scores (both oriented higher-is-better)."""
    if len(offline) < 3:
        return None, None
    res = stats.kendalltau(offline, online)
    if res.statistic is None or math.isnan(res.statistic):
        return None, None
    return float(res.statistic), float(res.pvalue)
