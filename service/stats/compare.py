"""Offline against online: per-model live metrics with intervals, rank agreement, paired tests.

Classification: accuracy with a 95% Wilson interval; champion vs each other model on the rows both
answered and that have labels. Binary tasks (detectors among them) add precision and recall of class 1
with Wilson intervals, average precision, and a paired McNemar test on recall
(service/stats/detection.py); detectors are ranked on average precision. Regression: RMSE with a 95%
interval (t-interval on squared errors, then the square root), champion vs each other model on the
paired absolute errors.

The verdicts rest on always-valid sequential tests (service/stats/sequential.py: a beta-mixture
e-value on McNemar's discordant pairs, a mixture SPRT on paired errors), Bonferroni-adjusted across
the comparisons, because /compare is read again and again while labels arrive and a fixed-sample test
checked at every look declares winners far too often. The fixed-sample tests (exact McNemar, Wilcoxon)
stay beside them for reference, Holm-adjusted, with the labels a fixed-sample test would need.

Pure: it takes the labelled outcomes per variant (service.ledger.reads) and the offline cards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from contract.manifest import Manifest, ModelCard
from service.stats.calibration import online_calibration
from service.stats.detection import ap_interval, detection_row, flags, paired_recall
from service.stats.estimates import accuracy_estimate
from service.stats.sequential import always_valid_p, discordant_e_value, mixture_sprt_e_value
from service.stats.significance import (
    Interval,
    PairedTest,
    accuracy_interval,
    holm,
    kendall,
    mcnemar,
    mcnemar_labels_needed,
    paired_errors_test,
    rmse_interval,
    verdict,
)

Outcomes = tuple[npt.NDArray[np.int64], npt.NDArray[Any]]
"""Per variant: (label row ids, correct (bool) for classification or error = prediction - truth)."""


def compare(
    manifest: Manifest,
    cards: Mapping[str, ModelCard],
    data: Mapping[str, Outcomes],
    *,
    champion: str,
    others: Sequence[str],
    served_rows: int,
    labelled_rows: int,
    calibration: Mapping[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]] | None = None,
    unlabelled: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] | None = None,
) -> dict[str, Any]:
    """The /compare document for one repository version. ``unlabelled``: the recent answers without
    a label yet (class indices, scores) per variant, for the accuracy estimates (classification)."""
    regression = manifest.task == "regression"
    metric = "rmse" if regression else "accuracy"
    detectors = manifest.primary_metric == DETECTOR_METRIC
    sign = -1.0 if regression else 1.0
    models = _model_rows(cards, data, metric, regression, champion, others)
    for m in models:
        if calibration is not None and m["model"] in calibration:
            score, hit = calibration[m["model"]]
            offline = cards[m["model"]].metrics.get("test", {})
            m["calibration"] = online_calibration(score, hit, len(manifest.classes) == 2, offline)
        if unlabelled is not None and not regression:
            name = m["model"]
            labelled = None
            if calibration is not None and name in calibration and name in data:
                labelled = (*calibration[name], data[name][1])
            m["estimate"] = accuracy_estimate(
                cards[name].accuracy_estimator, len(manifest.classes) == 2, unlabelled.get(name), labelled
            )
    binary = len(manifest.classes) == 2 and not regression
    if binary and calibration is not None:
        _detection_rows(models, cards, data, calibration)
    if detectors and calibration is not None:
        # detectors are ranked on average precision (accuracy would crown the prior: flag nothing)
        metric = DETECTOR_METRIC
        for m in models:
            _ap_row(m, cards)
    scored = [m for m in models if m["online"] is not None and m["offline"] is not None]
    for key in ("offline", "online"):
        # Ties share the best rank (1, 1, 3): equal scores are not an ordering.
        ranks = stats.rankdata([-sign * m[key] for m in scored], method="min") if scored else []
        for m, rank in zip(scored, ranks, strict=True):
            m[f"{key}_rank"] = int(rank)
    tau, tau_p = kendall([sign * m["offline"] for m in scored], [sign * m["online"] for m in scored])
    tests = [_paired(data, champion, other, regression) for other in others]
    final = _with_verdicts(tests, regression)
    if binary and calibration is not None:
        _recall_tests(final, data, calibration, champion)
    best_offline = _best(scored, "offline", sign)
    # online leader among every model with labelled answers (a build without labels has no offline score)
    best_online = _best([m for m in models if m["online"] is not None], "online", sign)
    return {
        "model": manifest.name,
        "version": manifest.version,
        "task": manifest.task,
        "metric": metric,
        "champion": champion,
        "served_rows": served_rows,
        "labelled_rows": labelled_rows,
        "label_coverage": (labelled_rows / served_rows) if served_rows else None,
        "best_offline": best_offline,
        "best_online": best_online,
        "kendall_tau": tau,
        "kendall_p": tau_p,
        "models": models,
        "tests": final,
        "summary": summary(best_offline, best_online, champion, final)
        + (_recall_summary(final) if detectors else ""),
    }


DETECTOR_METRIC = "average_precision"
"""A repository of detectors (builders/anomaly.py) is judged on the average precision of its scores."""


def _ap_row(m: dict[str, Any], cards: Mapping[str, ModelCard]) -> None:
    """A model row's offline and online scores as average precision (online: the detection row's, with
    its 95% logit interval), in place."""
    m["offline"] = cards[m["model"]].metrics.get("test", {}).get(DETECTOR_METRIC)
    d = m.get("detection")
    online = (
        ap_interval(d["average_precision"], d["positives"], d["n"]) if d else Interval(None, None, None, 0)
    )
    m.update(online=online.value, low=online.low, high=online.high, n=online.n)


def _recall_summary(tests: list[dict[str, Any]]) -> str:
    """Detectors: which models' recall differs from the champion's on the true anomalies (the
    fixed-sample recall tests, Holm-adjusted across the comparisons), as a sentence to append."""
    with_p = [t for t in tests if (t.get("recall_test") or {}).get("p_value") is not None]
    if not with_p:
        return ""
    adjusted = holm([t["recall_test"]["p_value"] for t in with_p])
    lower: list[str] = []
    higher: list[str] = []
    for t, p in zip(with_p, adjusted, strict=True):
        r = t["recall_test"]
        if p is not None and p < 0.05:
            (higher if r["challenger_recall"] > r["champion_recall"] else lower).append(t["challenger"])
    if not lower and not higher:
        return " Recall on the true anomalies: no model differs from the champion (McNemar, Holm)."
    parts = [f"higher: {', '.join(higher)}" if higher else "", f"lower: {', '.join(lower)}" if lower else ""]
    return (
        " Recall on the true anomalies vs the champion (McNemar, Holm, p < 0.05): "
        + "; ".join(x for x in parts if x)
        + "."
    )


def _detection_rows(
    models: list[dict[str, Any]],
    cards: Mapping[str, ModelCard],
    data: Mapping[str, Outcomes],
    calibration: Mapping[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]],
) -> None:
    """Binary tasks: each model's precision and recall of class 1 (the anomaly, for detectors), in place."""
    for m in models:
        name = m["model"]
        if name in data and name in calibration:
            score, hit = calibration[name]
            m["detection"] = detection_row(data[name][1], score, hit, cards[name].metrics.get("test", {}))


def _recall_tests(
    tests: list[dict[str, Any]],
    data: Mapping[str, Outcomes],
    calibration: Mapping[str, tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]],
    champion: str,
) -> None:
    """Binary tasks: each comparison's paired recall test against the champion, in place."""
    if champion not in data or champion not in calibration:
        return
    keys_c, correct_c = data[champion]
    hit_c = calibration[champion][1]
    for t in tests:
        other = t["challenger"]
        if other == champion or other not in data or other not in calibration:
            continue
        keys_o, correct_o = data[other]
        t["recall_test"] = paired_recall(
            keys_c, flags(correct_c, hit_c), keys_o, flags(correct_o, calibration[other][1]), hit_c
        )


def _model_rows(
    cards: Mapping[str, ModelCard],
    data: Mapping[str, Outcomes],
    metric: str,
    regression: bool,
    champion: str,
    others: Sequence[str],
) -> list[dict[str, Any]]:
    models = []
    for name, card in cards.items():
        offline = card.metrics.get("test", {}).get(metric)
        if name in data:
            _, vals = data[name]
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
    return models


def _paired(data: Mapping[str, Outcomes], champion: str, other: str, regression: bool) -> PairedTest:
    """Champion against one other model on the labelled rows both answered."""
    if other == champion or champion not in data or other not in data:
        return PairedTest(other, 0, None, None, {}, None)
    k1, v1 = data[champion]
    k2, v2 = data[other]
    common, i1, i2 = np.intersect1d(k1, k2, assume_unique=True, return_indices=True)
    a, b_ = v1[i1], v2[i2]
    n = len(common)
    if regression:
        abs_a, abs_b = np.abs(a.astype(float)), np.abs(b_.astype(float))
        diff, p, needed = paired_errors_test(abs_a, abs_b)
        return PairedTest(
            other,
            n,
            rmse_interval(a.astype(float)).value,
            rmse_interval(b_.astype(float)).value,
            {"mean_abs_error_diff": diff},
            p if n else None,
            labels_needed=needed,
            e_value=mixture_sprt_e_value(abs_a - abs_b) if n else None,
        )
    b, c, p = mcnemar(a.astype(bool), b_.astype(bool))
    return PairedTest(
        other,
        n,
        float(a.mean()) if n else None,
        float(b_.mean()) if n else None,
        {"only_champion_right": b, "only_challenger_right": c},
        p if n else None,
        labels_needed=mcnemar_labels_needed(b, c, n),
        e_value=discordant_e_value(b, c) if n else None,
    )


def _with_verdicts(tests: list[PairedTest], regression: bool) -> list[dict[str, Any]]:
    """Each comparison in words, from its always-valid p-value (Bonferroni over the comparisons);
    the fixed-sample p-values Holm-adjusted beside it."""
    final = []
    m = sum(1 for t in tests if t.e_value is not None)
    for t, p_adj in zip(tests, holm([t.p_value for t in tests]), strict=True):
        p_seq = always_valid_p(t.e_value, m) if t.e_value is not None else None
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
                "e_value": t.e_value,
                "always_valid_p": p_seq,
                "test": "always-valid: "
                + (
                    "mixture SPRT on paired absolute errors"
                    if regression
                    else "beta-mixture e-value on discordant pairs"
                ),
                "p_value": t.p_value,
                "p_adjusted": p_adj,
                "labels_needed": t.labels_needed,
                "verdict": verdict(better, p_seq, t.n, t.labels_needed),
            }
        )
    return final


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
    offline = best_offline or "none (no offline scores: built without labels)"
    text = f"Offline winner: {offline}; online leader: {best_online}. Champion: {champion}. "
    if winners:
        text += f"Significantly better than the champion online: {', '.join(winners)}. "
    else:
        text += "No model is significantly better than the champion online yet. "
    if losers:
        text += f"Significantly worse: {', '.join(losers)}."
    return text.strip()
