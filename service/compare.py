"""Offline against online: per-model live metrics with intervals, rank agreement, paired tests.

Classification: accuracy with a 95% Wilson interval; champion vs each other model on the rows both
answered and that have labels: an exact McNemar test (binomial on the discordant pairs).
Regression: RMSE with a 95% interval (t-interval on squared errors, then the square root); paired
Wilcoxon signed-rank test on absolute errors. p-values are Holm-adjusted across the comparisons,
because a champion compared with eight models at 5% each would "find" a winner far too often.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from service.ledger import decode_outputs

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


def _labelled(
    conn: sqlite3.Connection, model: str, version: int
) -> dict[str, tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]]:
    """variant -> (row keys, predicted label, score, [true label index, true value]) for labelled rows."""
    rows = conn.execute(
        "SELECT p.request_id || ':' || p.row_index, p.outputs, l.label_index, l.value "
        "FROM predictions p JOIN labels l ON l.request_id = p.request_id AND l.row_index = p.row_index "
        "WHERE p.model = ? AND p.version = ?",
        (model, version),
    ).fetchall()
    by_variant: dict[str, list[tuple[Any, ...]]] = {}
    for key, outputs, true_label, true_value in rows:
        for variant, (label, score, _role) in decode_outputs(outputs).items():
            by_variant.setdefault(variant, []).append((key, label, score, true_label, true_value))
    out = {}
    for v, items in by_variant.items():
        keys = np.array([i[0] for i in items], dtype=object)
        pred = np.array([-1 if i[1] is None else i[1] for i in items], dtype=np.int64)
        scores = np.array([np.nan if i[2] is None else i[2] for i in items], dtype=np.float64)
        truth = np.array([-1 if i[3] is None else i[3] for i in items], dtype=np.float64)
        values = np.array([np.nan if i[4] is None else i[4] for i in items], dtype=np.float64)
        out[v] = (keys, pred, scores, np.stack([truth, values]))
    return out


def compare(conn: sqlite3.Connection, repo: Any, champion: str, others: Sequence[str]) -> dict[str, Any]:
    """The /compare document for the loaded repository version."""
    manifest = repo.manifest
    regression = manifest.task == "regression"
    metric = "rmse" if regression else "accuracy"
    data = _labelled(conn, manifest.name, manifest.version)
    (served_rows,) = conn.execute(
        "SELECT COUNT(*) FROM predictions WHERE model = ? AND version = ?",
        (manifest.name, manifest.version),
    ).fetchone()
    (labelled_rows,) = conn.execute(
        "SELECT COUNT(*) FROM predictions p JOIN labels l ON l.request_id = p.request_id "
        "AND l.row_index = p.row_index WHERE p.model = ? AND p.version = ?",
        (manifest.name, manifest.version),
    ).fetchone()

    def correct_or_errors(name: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        keys, pred, score, truth = data[name]
        if regression:
            return keys, score - truth[1]
        return keys, pred == truth[0].astype(np.int64)

    models = []
    for name, card in repo.cards.items():
        offline = card.metrics.get("test", {}).get(metric)
        if name in data:
            _, vals = correct_or_errors(name)
            online = rmse_interval(vals) if regression else accuracy_interval(int(vals.sum()), len(vals))
        else:
            online = Interval(None, None, None, 0)
        models.append(
            {
                "model": name,
                "kind": card.kind,
                "family": card.family,
                "offline": offline,
                "online": online.value,
                "low": online.low,
                "high": online.high,
                "n": online.n,
                "role": "champion" if name == champion else ("compared" if name in others else ""),
            }
        )
    sign = -1.0 if regression else 1.0
    scored = [m for m in models if m["online"] is not None and m["offline"] is not None]
    for key in ("offline", "online"):
        # Ties share the best rank (1, 1, 3): equal scores are not an ordering.
        ranks = stats.rankdata([-sign * m[key] for m in scored], method="min") if scored else []
        for m, rank in zip(scored, ranks, strict=True):
            m[f"{key}_rank"] = int(rank)
    tau, tau_p = kendall([sign * m["offline"] for m in scored], [sign * m["online"] for m in scored])

    tests: list[PairedTest] = []
    for other in others:
        if other == champion or champion not in data or other not in data:
            tests.append(PairedTest(other, 0, None, None, {}, None))
            continue
        k1, v1 = correct_or_errors(champion)
        k2, v2 = correct_or_errors(other)
        common, i1, i2 = np.intersect1d(k1.astype(str), k2.astype(str), return_indices=True)
        a, b_ = v1[i1], v2[i2]
        n = len(common)
        if regression:
            diff, p, needed = paired_errors_test(np.abs(a.astype(float)), np.abs(b_.astype(float)))
            tests.append(
                PairedTest(
                    other,
                    n,
                    rmse_interval(a.astype(float)).value,
                    rmse_interval(b_.astype(float)).value,
                    {"mean_abs_error_diff": diff},
                    p if n else None,
                    labels_needed=needed,
                )
            )
        else:
            b, c, p = mcnemar(a.astype(bool), b_.astype(bool))
            tests.append(
                PairedTest(
                    other,
                    n,
                    float(a.mean()) if n else None,
                    float(b_.mean()) if n else None,
                    {"only_champion_right": b, "only_challenger_right": c},
                    p if n else None,
                    labels_needed=mcnemar_labels_needed(b, c, n),
                )
            )
    adjusted = holm([t.p_value for t in tests])
    final = []
    for t, p_adj in zip(tests, adjusted, strict=True):
        better = None
        if t.champion_score is not None and t.challenger_score is not None:
            better = (
                (t.challenger_score < t.champion_score)
                if regression
                else (t.challenger_score > t.champion_score)
            )
        final.append(
            {
                "challenger": t.challenger,
                "n": t.n,
                "champion_score": t.champion_score,
                "challenger_score": t.challenger_score,
                "statistic": t.statistic,
                "p_value": t.p_value,
                "p_adjusted": p_adj,
                "labels_needed": t.labels_needed,
                "verdict": verdict(better, p_adj, t.n, t.labels_needed),
            }
        )
    best_offline = _best(scored, "offline", sign)
    best_online = _best(scored, "online", sign)
    return {
        "model": manifest.name,
        "version": manifest.version,
        "task": manifest.task,
        "metric": metric,
        "champion": champion,
        "served_rows": int(served_rows),
        "labelled_rows": int(labelled_rows),
        "label_coverage": (labelled_rows / served_rows) if served_rows else None,
        "best_offline": best_offline,
        "best_online": best_online,
        "kendall_tau": tau,
        "kendall_p": tau_p,
        "models": models,
        "tests": final,
        "summary": summary(best_offline, best_online, champion, final),
    }


def _best(scored: list[dict[str, Any]], key: str, sign: float) -> str | None:
    """The top model by a score; ties listed together ("logreg = hist_gb")."""
    if not scored:
        return None
    top = max(sign * m[key] for m in scored)
    return " = ".join(m["model"] for m in scored if sign * m[key] == top)


def summary(
    best_offline: str | None, best_online: str | None, champion: str, tests: list[dict[str, Any]]
) -> str:
    """One paragraph a team can act on."""
    if best_online is None:
        return "No labelled traffic yet: post labels to /feedback to compare offline and online."
    winners = [t["challenger"] for t in tests if t["verdict"] == "challenger is better"]
    losers = [t["challenger"] for t in tests if t["verdict"] == "challenger is worse"]
    text = f"Offline winner: {best_offline}; online leader: {best_online}. Champion: {champion}. "
    if winners:
        text += f"Significantly better than the champion online: {', '.join(winners)}. "
    else:
        text += "No model is significantly better than the champion online yet. "
    if losers:
        text += f"Significantly worse: {', '.join(losers)}."
    return text.strip()
