"""The build: split, search every family on an equal budget, export, verify, evaluate, ensemble, write.

Every number on the leaderboard is computed from the ONNX outputs the service will serve, through
the same feed builder (contract.feeds) and the same combiner (contract.combine) the service uses.
Steps: builders/context.py (options, table, splits) -> builders/members.py (each family) ->
builders/ensembling.py (ensembles) -> the champion rule (builders/scoring.py) -> builders/writing.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from builders import data as data_mod
from builders import ensembles as ens
from builders import scoring
from builders.context import OUT_OF_FOLD, BuildContext, BuildOptions, load_table, prepare, split_table
from builders.distributed import search_backend
from builders.ensembling import build_ensembles
from builders.evaluated import Evaluated, ReportFacts
from builders.families import Family, families_for
from builders.members import out_of_fold, refit_member, score_member, train_member
from builders.unlabelled import build_unlabelled
from builders.writing import write_version
from contract.manifest import Manifest, Routing
from contract.verify import load_manifest

Progress = Callable[[str], None]
__all__ = ["BuildOptions", "BuildResult", "run_build", "split_table"]


@dataclass
class BuildResult:
    """What the build produced, for the CLI and the report."""

    path: Path
    manifest: Manifest
    models: list[Evaluated]
    seconds: float
    facts: ReportFacts


def run_build(opts: BuildOptions, progress: Progress = lambda _msg: None) -> BuildResult:
    """Run the whole build; raises BuildError on bad input before anything is written."""
    started = time.perf_counter()
    table = load_table(opts)
    has_text = any(c.kind == "text" for c in table.columns)
    fams = families_for(table.goal, opts.families, text=has_text)
    if has_text:
        texts = ", ".join(repr(c.name) for c in table.columns if c.kind == "text")
        progress(f"text columns {texts}: TF-IDF inside every graph; families that take it only")
    if opts.families:
        progress(f"families: {', '.join(f.name for f in fams)} (baseline and simplest always included)")
    for note in table.notes:
        progress(note)
    for d in table.dropped:
        progress(f"dropped column {d.name!r}: {d.reason}")
    if opts.fp_cost is not None and table.task != "binary":
        progress(f"note: --fp-cost/--fn-cost apply to binary tasks only; ignored for {table.task}")
    if not table.labelled:
        ctx, everything, excluded, routing, facts = build_unlabelled(opts, table, fams, progress)
        progress(f"champion: {routing.champion} ({routing.rule})")
        metric = scoring.primary_metric(ctx.goal)
        path = write_version(ctx, everything, excluded, routing, facts, metric)
        return BuildResult(
            path=path,
            manifest=load_manifest(path),
            models=everything + excluded,
            seconds=time.perf_counter() - started,
            facts=facts,
        )
    with search_backend(opts.dask_scheduler, opts.dask_local, progress) as scheduler:
        # On a cluster every worker takes fits: joblib's n_jobs=-1 means all of them.
        return _run(
            dataclasses.replace(opts, n_jobs=-1) if scheduler else opts, table, fams, progress, started
        )


def _run(
    opts: BuildOptions, table: data_mod.Table, fams: list[Family], progress: Progress, started: float
) -> BuildResult:
    ctx = prepare(opts, table)
    budget = (
        f"{opts.time_budget_s:g} s of search ({opts.time_budget_s / len(fams):.1f} s per family)"
        if opts.time_budget_s is not None
        else f"{opts.budget} trials"
    )
    progress(
        f"{table.name}: {table.task}, {len(table.features)} rows ({len(ctx.x_train)} train / "
        f"{len(ctx.x_val)} validation / {len(ctx.x_test)} test), {len(table.columns)} columns; budget "
        f"{budget} x {opts.cv_folds} folds per family, seed {opts.seed}"
    )
    models = [_member(fam, ctx, i, len(fams), progress) for i, fam in enumerate(fams, 1)]
    members = [m for m in models if not m.excluded]
    for m in members:
        score_member(m, ctx)
    if opts.refit:
        kept = [m.name for m in members if not refit_member(m, ctx)]
        progress(
            "refit on train + validation: "
            + (
                f"all {len(members)} members"
                if not kept
                else f"all but {', '.join(kept)} (export or parity failed)"
            )
        )
    for m in members:
        out_of_fold(m, ctx)
    progress(
        f"out-of-fold outputs over train + validation ({len(ctx.y_fit)} rows, {opts.cv_folds} folds) "
        "for the champion rule and the stack"
    )
    facts = ReportFacts(
        split_rows={"train": len(ctx.x_train), "validation": len(ctx.x_val), "test": len(ctx.x_test)},
        y_test=ctx.y_test,
        costs=ctx.costs,
        baseline=next(m.name for m in members if m.role == "baseline"),
        simplest=next((m.name for m in members if m.role == "simplest"), None),
    )
    ensembles = _ensembles(members, ctx, facts, progress)
    everything = members + ensembles
    metric = scoring.primary_metric(ctx.goal)
    routing = _routing(everything, metric, ctx)
    progress(f"champion: {routing.champion} ({routing.rule})")
    facts.champion = routing.champion
    path = write_version(ctx, everything, [m for m in models if m.excluded], routing, facts, metric)
    return BuildResult(
        path=path,
        manifest=load_manifest(path),
        models=models + ensembles,
        seconds=time.perf_counter() - started,
        facts=facts,
    )


def _member(fam: Family, ctx: BuildContext, i: int, n: int, progress: Progress) -> Evaluated:
    share = ctx.opts.time_budget_s / n if ctx.opts.time_budget_s is not None else None
    ev = train_member(fam, ctx, share)
    if ev.excluded:
        progress(f"[{i}/{n}] {ev.name:<14} EXCLUDED: {ev.excluded}")
        return ev
    assert ev.search is not None and ev.latency is not None
    s = ev.search
    spent = (
        f"{s.trials_run:>3} trials in {s.seconds:6.1f}s of {s.budget_seconds:.1f}s"
        if s.budget_seconds is not None
        else f"{s.trials_run:>2}/{s.budget_trials} trials in {s.seconds:6.1f}s"
    )
    progress(
        f"[{i}/{n}] {ev.name:<14} {spent}  cv {ev.search.scoring.removeprefix('neg_')} "
        f"{abs(ev.search.best_cv_score or 0.0):.4f}  onnx {ev.latency.onnx_single_row_us:7.1f}µs/row"
    )
    return ev


def _ensembles(
    members: list[Evaluated], ctx: BuildContext, facts: ReportFacts, progress: Progress
) -> list[Evaluated]:
    pool = [m for m in members if m.role != "baseline"]
    if len(pool) < 2:
        return []
    baseline = next(m for m in members if m.role == "baseline")
    ensembles, diversity = build_ensembles(pool, baseline, ctx, progress)
    facts.error_correlation = diversity.error_correlation
    facts.disagreement = diversity.disagreement
    facts.ensemble_members = diversity.members
    facts.ensemble_rule = ens.SELECTION_RULE
    facts.vote_independence = diversity.vote_independence
    return ensembles


def _evidence(m: Evaluated, y: Any, split: str) -> dict[str, Any]:
    """Per-row outcomes on the rows the champion rule judges: whether the served label is right and
    the row's log loss (classification), or the squared error (regression)."""
    out = m.outputs.get(split)
    if out is None:
        return {}
    if out.values is not None:
        return {"sq_error": (out.values - np.asarray(y, dtype=np.float64)) ** 2}
    if out.proba is None or out.labels is None:
        return {}
    return {"correct": out.labels == np.asarray(y), "log_loss": scoring.row_log_loss(out.proba, y)}


def _routing(everything: list[Evaluated], metric: str, ctx: BuildContext) -> Routing:
    """The champion by the rule in builders/scoring.py, judged on every model's out-of-fold outputs
    over train + validation; everything else runs as shadow."""
    split, y = OUT_OF_FOLD, ctx.y_fit
    own = {m.name: len(m.onnx_bytes) if m.onnx_bytes is not None else 0 for m in everything}
    # an ensemble runs its members: its size is theirs plus its own graph (the stacking meta-model)
    size = {m.name: own[m.name] + sum(own.get(x, 0) for x in m.members) for m in everything}
    candidates = [
        scoring.Candidate(
            name=m.name,
            validation_score=m.metrics[split][metric],
            latency_us=m.latency.onnx_single_row_us if m.latency is not None else float("inf"),
            eligible=m.role != "baseline" and m.parity is not None and m.parity.passed,
            size_bytes=size[m.name],
            vote_shares=m.strategy == "hard_vote",
            **_evidence(m, y, split),
        )
        for m in everything
    ]
    champion, rule = scoring.choose_champion(candidates, metric, len(y), "out-of-fold (train + validation)")
    return Routing(
        champion=champion,
        shadow=[m.name for m in everything if m.name != champion],
        shadow_fraction=1.0,
        rule=rule,
    )
