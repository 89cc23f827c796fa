"""Ensembles from the members: choose members for diversity, then evaluate every combiner through the
contract's :func:`~contract.combine.combine` (the code the service runs online), and time it as the
service answers it: every member once, then the combiner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from builders import ensembles as ens
from builders import latency, scoring
from builders.context import OUT_OF_FOLD, SPLITS, BuildContext, frame_feeds
from builders.evaluated import Evaluated, Matrix, VoteIndependence
from builders.members import decision_threshold, metrics_of
from builders.stacking import stack
from contract.combine import MetaModel, combine
from contract.manifest import LatencyRecord, ParityRecord, Strategy
from contract.outputs import Output, from_graph

Progress = Callable[[str], None]


@dataclass
class Diversity:
    """What the member choice looked at, for the report."""

    members: list[str]
    error_correlation: Matrix
    disagreement: Matrix | None
    vote_independence: VoteIndependence | None = None


def build_ensembles(
    pool: list[Evaluated], baseline: Evaluated, ctx: BuildContext, progress: Progress
) -> tuple[list[Evaluated], Diversity]:
    """Vote / average / weighted average (or mean / weighted mean) and stacking over diverse members."""
    metric = scoring.primary_metric(ctx.goal)
    chosen, diversity, weights = _choose(pool, baseline, ctx)
    names = diversity.members
    progress(f"ensemble members (diversity rule): {', '.join(names)}; skill weights {weights}")
    out: list[Evaluated] = []
    for name, strategy, w, desc in _specs(ctx.task, weights):
        ev = Evaluated(name=name, kind="ensemble", family=strategy, description=desc)
        ev.strategy, ev.members, ev.weights = strategy, names, w
        if ctx.chooses_threshold and strategy == "soft_average":
            val = _combined(ev, chosen, "validation", ctx)
            assert val.proba is not None
            ev.threshold = decision_threshold(val.proba[:, 1], ctx)
        score_combined(ev, chosen, ctx)
        ev.parity = ParityRecord(
            rows=len(ctx.y_test), passed=True, tolerance=0.0, reason="computed from verified member outputs"
        )
        ev.latency = ensemble_latency(chosen, ev, ctx, None)
        out.append(ev)
    if ctx.classification:
        accs = [m.metrics["test"]["accuracy"] for m in chosen]
        diversity.vote_independence = VoteIndependence(
            members=names,
            member_accuracies=accs,
            independent_accuracy=ens.independent_vote_accuracy(accs),
            measured_accuracy=out[0].metrics["test"]["accuracy"],
        )
    stacked = stack(chosen, ctx)
    if stacked is not None:
        stacked.latency = ensemble_latency(chosen, stacked, ctx, _meta(stacked))
        out.append(stacked)
    for ev in out:
        assert ev.latency is not None
        progress(
            f"ensemble {ev.name:<9} test {metric} {ev.metrics['test'][metric]:.4f}  "
            f"onnx {ev.latency.onnx_single_row_us:7.1f}µs/row"
        )
    return out, diversity


def _choose(
    pool: list[Evaluated], baseline: Evaluated, ctx: BuildContext
) -> tuple[list[Evaluated], Diversity, list[float]]:
    metric = scoring.primary_metric(ctx.goal)
    names = [m.name for m in pool]
    errors = ens.error_matrix(ctx.task, ctx.y_val, [_errors_of(m.outputs["validation"]) for m in pool])
    corr = ens.error_correlation(errors)
    disagreement = None
    if ctx.classification:
        labels = [_errors_of(m.outputs["validation"]) for m in pool]
        disagreement = Matrix(names, ens.disagreement(labels).round(4).tolist())
    scores = [scoring.oriented(metric, m.metrics["validation"][metric]) for m in pool]
    base_score = scoring.oriented(metric, baseline.metrics["validation"][metric])
    latencies = [m.latency.onnx_single_row_us for m in pool if m.latency is not None]
    chosen_names = ens.select_members(names, scores, base_score, corr, latencies)
    chosen = [next(m for m in pool if m.name == n) for n in chosen_names]
    weights = ens.skill_weights([scores[names.index(n)] for n in chosen_names], base_score)
    diversity = Diversity(chosen_names, Matrix(names, corr.round(4).tolist()), disagreement)
    return chosen, diversity, weights


def _errors_of(out: Output) -> Any:
    return out.values if out.values is not None else out.raw_labels


def _specs(task: str, weights: list[float]) -> list[tuple[str, Strategy, list[float] | None, str]]:
    if task == "regression":
        return [
            ("mean", "mean", None, "uniform mean of the members' predictions"),
            ("weighted", "mean", weights, "mean weighted by validation skill (R2 above the baseline)"),
        ]
    return [
        ("vote", "hard_vote", None, "hard majority vote; ties go to the lowest class index"),
        ("average", "soft_average", None, "uniform average of the members' probabilities"),
        (
            "weighted",
            "soft_average",
            weights,
            "probabilities averaged with weights proportional to validation accuracy above the baseline",
        ),
    ]


def _meta(ev: Evaluated) -> MetaModel | None:
    session = ev.session
    if session is None:
        return None
    return lambda features: session.run(None, {"features": features})


def _combined(ev: Evaluated, members: list[Evaluated], split: str, ctx: BuildContext) -> Output:
    assert ev.strategy is not None
    return combine(
        ev.strategy,
        [m.outputs[split] for m in members],
        task=ctx.table.task,
        n_classes=ctx.n_classes,
        weights=ev.weights,
        threshold=ev.threshold,
        meta=_meta(ev),
    )


def score_combined(ev: Evaluated, members: list[Evaluated], ctx: BuildContext) -> None:
    """The ensemble's served outputs and metrics on every split."""
    for split in SPLITS:
        ev.outputs[split] = out = _combined(ev, members, split, ctx)
        ev.metrics[split] = metrics_of(out, ctx.ys[split], ctx)
    # A fixed combiner's out-of-fold outputs are its members' combined; the stack's meta-model was fit
    # on those rows, so it is cross-validated instead (builders/stacking.py).
    if ev.strategy != "stack" and all(OUT_OF_FOLD in m.outputs for m in members):
        ev.outputs[OUT_OF_FOLD] = out = _combined(ev, members, OUT_OF_FOLD, ctx)
        ev.metrics[OUT_OF_FOLD] = metrics_of(out, ctx.y_fit, ctx)


def ensemble_latency(
    members: list[Evaluated], ev: Evaluated, ctx: BuildContext, meta: MetaModel | None
) -> LatencyRecord:
    """The whole ensemble as the service answers it: every member run once, then the combiner."""
    rows = ctx.x_test
    sample = pd.concat([rows] * (latency.BATCH_ROWS // max(len(rows), 1) + 1)).iloc[: latency.BATCH_ROWS]
    sessions = [m.session for m in members if m.session is not None]
    thresholds = [m.threshold for m in members]
    assert ev.strategy is not None
    strategy = ev.strategy

    def run_rows(n: int) -> Callable[[], Any]:
        f = frame_feeds(ctx.table.columns, sample.iloc[:n])

        def call() -> Output:
            outs = [
                from_graph(s.run(None, f), ctx.task, t) for s, t in zip(sessions, thresholds, strict=True)
            ]
            return combine(
                strategy, outs, task=ctx.table.task, n_classes=ctx.n_classes, weights=ev.weights, meta=meta
            )

        return call

    single, batch = latency.single_and_batch_us(run_rows)
    return LatencyRecord(onnx_single_row_us=single, onnx_batch_row_us=batch)
