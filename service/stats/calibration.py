"""Online calibration with intervals, from the labelled rows of each model (service/ledger/reads.py),
defined as offline (contract/calibration.py).

Intervals (95%): Brier score and log loss are means of per-row terms, so a t-interval on those terms;
ECE is not a mean, so a bootstrap: 400 resamples of the reliability table itself (row counts per bin
multinomial, hits per bin binomial), which costs the same at 100 rows or 10 million.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from contract import calibration as cal

RESAMPLES = 400


def _t_interval(terms: npt.NDArray[np.float64]) -> tuple[float | None, float | None, float | None]:
    n = len(terms)
    if n == 0:
        return None, None, None
    mean = float(terms.mean())
    if n < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.975, n - 1) * terms.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def _ece_interval(
    score: npt.NDArray[np.float64], hit: npt.NDArray[np.bool_], seed: int
) -> tuple[float | None, float | None]:
    n = len(score)
    if n < 2:
        return None, None
    bins = cal.reliability(score, hit)
    counts = np.array([b["n"] for b in bins])
    means = np.array([b["mean_score"] or 0.0 for b in bins])
    freq = np.array([b["observed"] or 0.0 for b in bins])
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n, counts / n, size=RESAMPLES)
    hits = rng.binomial(drawn, freq)
    gaps = np.abs(drawn * means - hits).sum(axis=1) / n
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


def online_calibration(
    score: npt.NDArray[Any],
    hit: npt.NDArray[np.bool_],
    binary: bool,
    offline: dict[str, float],
    seed: int = 0,
) -> dict[str, Any]:
    """Brier, ECE (and for a binary task log loss) with 95% intervals, the reliability bins, and the
    offline test-split values beside them."""
    s = np.asarray(score, dtype=np.float64)
    keep = ~np.isnan(s)
    s, h = s[keep], np.asarray(hit, dtype=np.bool_)[keep]
    brier, brier_low, brier_high = _t_interval((s - h) ** 2)
    ece_low, ece_high = _ece_interval(s, h, seed)
    out: dict[str, Any] = {
        "of": "P(class 1)" if binary else "top-label confidence",
        "n": len(s),
        "brier": brier,
        "brier_low": brier_low,
        "brier_high": brier_high,
        "ece": cal.ece(s, h) if len(s) else None,
        "ece_low": ece_low,
        "ece_high": ece_high,
        "offline_brier": offline.get("brier"),
        "offline_ece": offline.get("ece"),
        "bins": cal.reliability(s, h),
    }
    if binary:
        p = np.clip(s, cal.EPS, 1 - cal.EPS)
        ll, ll_low, ll_high = _t_interval(-np.where(h, np.log(p), np.log(1 - p)))
        out.update(
            log_loss=ll, log_loss_low=ll_low, log_loss_high=ll_high, offline_log_loss=offline.get("log_loss")
        )
    return out
