"""Drift of one input column: live bin counts against the training reference's.

PSI (population stability index) over the reference bins, both distributions smoothed by half a row
per bin so an empty bin does not make it infinite; the usual reading is < 0.1 stable, 0.1-0.25
moderate, >= 0.25 drifted. Beside it a test: numeric columns a two-sample Kolmogorov-Smirnov test on
the binned distribution (the statistic taken at the bin edges is a lower bound of the exact one, so
the p-value is conservative), categorical ones a chi-square test of homogeneity. PSI is biased up on
few rows (about (bins - 1) x (1/live + 1/reference)), hence a minimum of live rows before a status.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from contract.reference import ColumnReference

PSI_MODERATE = 0.1
PSI_DRIFTED = 0.25


def psi(reference: npt.NDArray[np.int64], live: npt.NDArray[np.int64]) -> float:
    """Population stability index of two count vectors over the same bins."""
    ref = (reference + 0.5) / (reference.sum() + 0.5 * len(reference))
    now = (live + 0.5) / (live.sum() + 0.5 * len(live))
    return float(np.sum((now - ref) * np.log(now / ref)))


def binned_ks(reference: npt.NDArray[np.int64], live: npt.NDArray[np.int64]) -> tuple[float, float]:
    """(statistic, p-value) of a two-sample KS test on binned values (missing values left out)."""
    n, m = int(reference.sum()), int(live.sum())
    if n == 0 or m == 0:
        return 0.0, 1.0
    d = float(np.max(np.abs(np.cumsum(reference) / n - np.cumsum(live) / m)))
    return d, float(stats.kstwobign.sf(d * math.sqrt(n * m / (n + m))))


def chi_square(reference: npt.NDArray[np.int64], live: npt.NDArray[np.int64]) -> tuple[float, float]:
    """(statistic, p-value) of a chi-square test that both count vectors come from one distribution."""
    table = np.vstack([reference, live])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table[1].sum() == 0 or table[0].sum() == 0:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def status(score: float, rows: int, min_rows: int) -> str:
    if rows < min_rows:
        return "too_few_rows"
    if score >= PSI_DRIFTED:
        return "drifted"
    return "moderate" if score >= PSI_MODERATE else "stable"


def column_drift(ref: ColumnReference, live: npt.NDArray[np.int64], min_rows: int) -> dict[str, Any]:
    """One column's drift entry of the /drift document."""
    reference = np.asarray(ref.counts, dtype=np.int64)
    rows = int(live.sum())
    score = psi(reference, live) if rows else 0.0
    if ref.kind != "categorical":  # numbers, or text lengths: ordered bins
        test = "ks"
        statistic, p = binned_ks(reference[:-1], live[:-1])
    else:
        test = "chi2"
        statistic, p = chi_square(reference, live)
    ref_total = max(int(reference.sum()), 1)
    names = ref.bin_names()
    return {
        "column": ref.name,
        "kind": ref.kind,
        "psi": round(score, 6),
        "status": status(score, rows, min_rows),
        "test": test,
        "statistic": round(statistic, 6),
        "p_value": p,
        "rows": rows,
        "missing_share": {
            "reference": round(float(reference[-1]) / ref_total, 6),
            "live": round(float(live[-1]) / rows, 6) if rows else None,
        },
        "bins": [
            {
                "bin": name,
                "reference": round(float(r) / ref_total, 6),
                "live": round(float(v) / rows, 6) if rows else None,
            }
            for name, r, v in zip(names, reference, live, strict=True)
        ],
    }
