"""Anomaly detection without labels (``--task anomaly`` without ``--target``): nothing can be judged
offline, so nothing is chosen on a score.

Every detector runs with its library defaults (a search needs a score) on train + validation, is
exported and checked against scikit-learn on the test rows like any member, and flags rows whose
anomaly rank is at least 1 - contamination (default 5%). The champion is the rank average of every
detector that passed parity (no single detector can be preferred without labels, and averaging ranks
is the robust default of the outlier-ensemble literature); the detectors run as shadows, so every
request records every detector's score. Labels posted later to /feedback ("anomaly" or "normal")
judge them online: /compare's precision, recall and paired tests are where the choice gets made.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from builders.anomaly import Detector, with_contamination
from builders.context import BuildContext, BuildOptions, prepare
from builders.data import Table
from builders.ensembling import ensemble_latency
from builders.evaluated import Evaluated, ReportFacts
from builders.families import Family
from builders.members import export_checked
from builders.preprocess import make_pipeline
from builders.scoring import contamination_threshold
from contract.combine import combine
from contract.manifest import ParityRecord, Routing
from contract.outputs import from_graph

Progress = Callable[[str], None]
AVERAGE = "average"


def build_unlabelled(
    opts: BuildOptions, table: Table, fams: list[Family], progress: Progress
) -> tuple[BuildContext, list[Evaluated], list[Evaluated], Routing, ReportFacts]:
    """(context, served models, excluded ones, routing, report facts) of a build without labels."""
    ctx = prepare(opts, table)
    detectors = [f for f in fams if f.role != "baseline"]  # a prior needs labels
    progress(
        f"{table.name}: anomaly detection without labels, {len(table.features)} rows "
        f"({len(ctx.x_fit)} fit / {len(ctx.x_test)} test), {len(table.columns)} columns; each detector "
        f"with its defaults (without labels there is no score to search on), contamination "
        f"{ctx.contamination:g}"
    )
    ignored = [
        flag
        for flag, given in (
            ("--fp-cost/--fn-cost", opts.fp_cost is not None),
            ("--time-budget", opts.time_budget_s is not None),
            ("--search halving", opts.search != "random"),
            ("--dask-scheduler/--dask-local", bool(opts.dask_scheduler or opts.dask_local)),
        )
        if given
    ]
    if ignored:
        progress(f"note: without labels nothing is scored or searched; ignored: {', '.join(ignored)}")
    models = []
    for i, fam in enumerate(detectors, 1):
        ev = _detector(fam, ctx)
        state = (  # an export that failed has no latency
            f"onnx {ev.latency.onnx_single_row_us:7.1f}µs/row"
            if ev.latency and not ev.excluded
            else f"EXCLUDED: {ev.excluded}"
        )
        progress(f"[{i}/{len(detectors)}] {ev.name:<16} fit in {ev.training_seconds:6.1f}s  {state}")
        models.append(ev)
    served = [m for m in models if not m.excluded]
    if not served:
        raise RuntimeError("no detector could be exported with parity")  # a bug, not bad input
    ensembles = [_rank_average(served, ctx)] if len(served) >= 2 else []
    champion = ensembles[0].name if ensembles else served[0].name
    rule = (
        "without labels no detector can be preferred: the rank average of every detector that passed "
        "parity serves, the detectors run as shadows (every request records every score) until labels "
        "posted to /feedback judge them in /compare"
        if ensembles
        else "the only detector that passed parity"
    )
    everything = served + ensembles
    routing = Routing(champion=champion, shadow=[m.name for m in everything if m.name != champion], rule=rule)
    facts = ReportFacts(
        split_rows={"fit": len(ctx.x_fit), "test": len(ctx.x_test)},
        y_test=ctx.y_test,
        champion=champion,
        simplest=next((m.name for m in served if m.role == "simplest"), None),
    )
    return ctx, everything, [m for m in models if m.excluded], routing, facts


def _detector(fam: Family, ctx: BuildContext) -> Evaluated:
    ev = Evaluated(name=fam.name, kind="member", family=fam.name, description=fam.assumptions, role=fam.role)
    started = time.perf_counter()
    pipeline = make_pipeline(fam, ctx.table.columns, ctx.opts.seed)
    with_contamination(pipeline, ctx.contamination)
    pipeline.fit(ctx.x_fit, ctx.y_fit)  # the labels are all 0: the detector never reads them
    ev.pipeline, ev.trained_on = pipeline, "train+validation"
    ev.hyperparameters = {"contamination": ctx.contamination, "defaults": True}
    ev.training_seconds = round(time.perf_counter() - started, 3)
    export_checked(ev, pipeline, ctx)
    if ev.excluded:
        return ev
    assert ev.session is not None
    ev.outputs["test"] = from_graph(ev.session.run(None, ctx.feeds["test"]), ctx.task)
    return ev


def _rank_average(members: list[Evaluated], ctx: BuildContext) -> Evaluated:
    """The mean of the detectors' anomaly ranks, flagging the contamination share of the fitting rows
    (each ranked as its detector ranked it when it fit, so without itself among its neighbours)."""
    ev = Evaluated(
        name=AVERAGE,
        kind="ensemble",
        family="soft_average",
        description="rank average of every detector: the mean of their anomaly ranks among the fitting rows",
    )
    ev.strategy, ev.members, ev.weights = "soft_average", [m.name for m in members], None
    fit_ranks = []
    for m in members:
        assert m.pipeline is not None
        detector = m.pipeline.steps[-1][1]
        assert isinstance(detector, Detector)
        fit_ranks.append(detector.train_rank_)
    ev.threshold = contamination_threshold(np.mean(fit_ranks, axis=0), ctx.contamination)
    ev.outputs["test"] = combine(
        "soft_average",
        [m.outputs["test"] for m in members],
        task="binary",
        n_classes=2,
        threshold=ev.threshold,
    )
    ev.parity = ParityRecord(
        rows=len(ctx.x_test), passed=True, tolerance=0.0, reason="computed from verified member outputs"
    )
    ev.latency = ensemble_latency(members, ev, ctx, None)
    return ev
