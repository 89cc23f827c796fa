"""The offline report: Markdown (report.md) rendered to HTML (report.html) with a Markdown library,
plus plots, written into the repository version.

Shows what the model-selection tips ask for: the baseline and the simplest model, every gain measured
against the simplest, the budget each family got and spent, learning curves (now vs later), quality
against latency with its Pareto front, error correlation behind the ensembles, and what correlation
cost the vote compared with independent members.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import markdown
import numpy as np
from scipy import stats

from builders.context import OUT_OF_FOLD, BuildContext
from builders.evaluated import Evaluated, Matrix, ReportFacts
from builders.report_plots import write_plots
from builders.repository import existing_versions
from builders.scoring import oriented, pareto_front
from contract.manifest import Routing
from contract.verify import RepositoryError, load_card, load_manifest

METRIC_COLUMNS = {
    "binary": ["accuracy", "f1", "log_loss", "roc_auc"],
    "multiclass": ["accuracy", "f1", "log_loss", "roc_auc"],
    "regression": ["rmse", "mae", "r2"],
    "anomaly": ["average_precision", "precision", "recall", "roc_auc", "accuracy"],
}
STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:48%}"
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _latency(m: Evaluated) -> float:
    assert m.latency is not None
    return m.latency.onnx_single_row_us


def leaderboard_rows(
    models: list[Evaluated], metric: str, task: str, simplest: str | None, champion: str
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the leaderboard (shared by the CLI table and the report)."""
    # detectors are a binary task judged on average precision (builders/anomaly.py)
    metrics = METRIC_COLUMNS["anomaly" if metric == "average_precision" else task] + (
        ["cost"] if any("cost" in m.metrics.get("test", {}) for m in models) else []
    )
    front = pareto_front([(m.name, oriented(metric, m.metrics["test"][metric]), _latency(m)) for m in models])
    ref = next((m for m in models if m.name == simplest), None)
    ordered = sorted(models, key=lambda m: -oriented(metric, m.metrics["test"][metric]))
    # the champion rule's evidence: out-of-fold over train + validation (builders/members.py)
    oof = [metric] + (["log_loss"] if task != "regression" else [])
    header = [
        "model", "kind", *metrics, *[f"oof {k}" for k in oof], f"Δ{metric} vs {simplest}", "onnx µs/row", "batch µs/row",
        "sklearn µs/row", "size KB", "train s", "trials", "pareto", "threshold",
    ]  # fmt: skip
    rows = []
    for m in ordered:
        t = m.metrics["test"]
        lat = m.latency
        assert lat is not None
        gain = t[metric] - ref.metrics["test"][metric] if ref is not None else None
        size = len(m.onnx_bytes) if m.onnx_bytes is not None else 0
        rows.append(
            [
                m.name + (" ★" if m.name == champion else ""),
                m.kind,
                *[_fmt(t.get(k)) for k in metrics],
                *[_fmt(m.metrics.get(OUT_OF_FOLD, {}).get(k)) for k in oof],
                ("+" if gain is not None and gain >= 0 else "") + _fmt(gain),
                _fmt(lat.onnx_single_row_us, 1),
                _fmt(lat.onnx_batch_row_us, 2),
                _fmt(lat.sklearn_single_row_us, 0) if lat.sklearn_single_row_us else "–",
                _fmt(size / 1024, 1) if size else "–",
                _fmt(m.training_seconds, 1),
                f"{m.search.trials_run}/{m.search.budget_trials}" if m.search else "–",
                "✓" if m.name in front else "",
                _fmt(m.threshold, 3) if m.threshold is not None else "–",
            ]
        )
    return header, rows


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, so a value never splits a row."""
    return text.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _matrix(title: str, m: Matrix) -> str:
    return _table(
        [title, *m.names], [[n, *[f"{v:.2f}" for v in row]] for n, row in zip(m.names, m.matrix, strict=True)]
    )


def _budget(members: list[Evaluated]) -> str:
    header = [
        "family", "budget (trials or seconds)", "trials run", "CV folds", "seed", "search s", "best CV score",
        "still improving", "assumptions",
    ]  # fmt: skip
    rows = []
    for m in members:
        s = m.search
        assert s is not None
        rows.append(
            [m.name, f"{s.budget_seconds:g} s" if s.budget_seconds is not None
             else str(s.budget_trials) + (" (halving)" if s.strategy == "halving" else ""),
             str(s.trials_run), str(s.cv_folds), str(s.seed),
             _fmt(s.seconds, 1), _fmt(abs(s.best_cv_score or 0.0)), "yes" if m.still_improving else "no",
             m.description]
        )  # fmt: skip
    return _table(header, rows)


def _parity(members: list[Evaluated], excluded: list[Evaluated]) -> str:
    rows = []
    for m in members:
        p = m.parity
        assert p is not None
        rows.append(
            [m.name, "pass" if p.passed else "FAIL", str(p.rows), f"{p.max_abs_diff:.2e}", f"{p.tolerance:.0e}",
             str(p.tie_mismatches), str(p.neighbour_ties)]
        )  # fmt: skip
    rows += [[m.name, "EXCLUDED", "–", "–", "–", m.excluded, "–"] for m in excluded]
    header = ["model", "parity", "rows", "max |Δ|", "tolerance", "tie flips / reason", "kNN distance ties"]
    return _table(header, rows)


def _diversity(facts: ReportFacts) -> str | None:
    if facts.error_correlation is None:
        return None
    md = f"Members chosen: **{', '.join(facts.ensemble_members)}**. Rule: {facts.ensemble_rule}\n\n"
    md += _matrix("error corr", facts.error_correlation)
    if facts.disagreement is not None:
        md += "\n\nDisagreement (share of validation rows where two members' labels differ):\n\n"
        md += _matrix("disagreement", facts.disagreement)
    vi = facts.vote_independence
    if vi is not None:
        md += (
            f"\n\nVote of {', '.join(vi.members)} (test accuracies "
            f"{', '.join(f'{a:.3f}' for a in vi.member_accuracies)}): independent members would vote "
            f"to **{vi.independent_accuracy:.4f}**; measured **{vi.measured_accuracy:.4f}**. The gap "
            f"is what correlated errors cost."
        )
    return md


def render(
    ctx: BuildContext,
    models: list[Evaluated],
    excluded: list[Evaluated],
    facts: ReportFacts,
    metric: str,
    routing: Routing,
    plots: dict[str, str],
) -> str:
    """The report as Markdown."""
    table, opts = ctx.table, ctx.opts
    fp = table.fingerprint
    budget = (
        f"{opts.time_budget_s:g} s of search split equally across families (trials in one seeded order "
        "until each share is spent)"
        if opts.time_budget_s is not None
        else f"{opts.budget} random-search trials"
    )
    refit = (
        " Members were then refit on train + validation, and those refits serve (validation metrics are "
        "the train-only fits', on which every choice was made)."
        if opts.refit
        else ""
    )
    task = (
        f"anomaly detection (binary: {table.classes[1]!r} is the anomaly; detectors train on the features "
        "alone, the labels judge them)"
        if table.anomaly
        else table.task
    )
    intro = (
        f"Dataset `{fp.source}` ({fp.rows} rows, target `{fp.target}`, task **{task}**); splits: "
        f"{facts.split_rows}. Every family got the same budget: {budget}, "
        f"{opts.cv_folds}-fold CV, seed {opts.seed}.{refit} All metrics are on the held-out test split, "
        f"computed from the ONNX outputs the service serves."
    )
    intro += _dropped(table)
    header, rows = leaderboard_rows(models, metric, table.task, facts.simplest, routing.champion)
    leaderboard = (
        f"★ champion: **{routing.champion}**. Rule: {routing.rule}. Baseline: `{facts.baseline}`; every "
        f"gain is measured against the simplest model, `{facts.simplest}`. Pareto ✓: no other model is "
        f"both better and faster.\n\n" + _table(header, rows)
    )
    members = [m for m in models if m.kind == "member"]
    sections = [
        ("Overview", intro),
        ("Leaderboard", leaderboard),
        ("Equal search budget and learning curves", _budget(members)),
        ("ONNX parity (export vs scikit-learn on test rows)", _parity(members, excluded)),
    ]
    diversity = _diversity(facts)
    if diversity is not None:
        sections.append(("Ensembles and diversity", diversity))
    previous = _against_previous(ctx, models, metric, routing)
    if previous is not None:
        sections.append(previous)
    sections.append(("Plots", "\n\n".join(f"![{k}]({v})" for k, v in plots.items())))
    return f"# Offline report: {table.name}\n\n" + "\n\n".join(f"## {t}\n\n{md}\n" for t, md in sections)


def _against_previous(
    ctx: BuildContext, models: list[Evaluated], metric: str, routing: Routing
) -> tuple[str, str] | None:
    """This build beside the newest version already in the repository (same model name): per model
    its test score then and now, and the champions. None for a first version or an unreadable one."""
    folder = ctx.opts.out / ctx.table.name
    versions = existing_versions(folder)
    if not versions:
        return None
    then = folder / str(versions[-1])
    try:
        manifest = load_manifest(then)
        specs: list[tuple[str, str]] = [(s.name, s.card) for s in manifest.members]
        specs += [(s.name, s.card) for s in manifest.ensembles]
        cards = {name: load_card(then / card) for name, card in specs}
    except RepositoryError:
        return None
    same = manifest.dataset.sha256 == ctx.table.fingerprint.sha256
    note = (
        "the same table (same sha256): with the same seed the test split is the same rows, so the scores "
        "compare directly"
        if same
        else "a different table (sha256 differs): the test splits differ, so compare the scores loosely"
    )
    rows = []
    for m in models:
        was = cards.get(m.name)
        before = was.metrics.get("test", {}).get(metric) if was is not None else None
        now = m.metrics.get("test", {}).get(metric)
        delta = f"{now - before:+.4f}" if now is not None and before is not None else "–"
        rows.append([m.name, _fmt(before), _fmt(now), delta])
    rows += [[n, _fmt(c.metrics.get("test", {}).get(metric)), "– (not in this build)", "–"]
             for n, c in cards.items() if n not in {m.name for m in models}]  # fmt: skip
    text = (
        f"Version {manifest.version} of `{manifest.name}` was built from {note}. Champion then: "
        f"**{manifest.routing.champion}**; now: **{routing.champion}**.\n\n"
        + _table(
            ["model", f"test {metric}, v{manifest.version}", f"test {metric}, this build", "change"], rows
        )
    )
    return f"Against version {manifest.version}", text


def _dropped(table: Any) -> str:
    """The report's sentence on the columns the build left out (empty when none were)."""
    if not table.dropped:
        return ""
    return " Dropped columns: " + "; ".join(f"`{d.name}` ({d.reason})" for d in table.dropped) + "."


def unlabelled_rows(models: list[Evaluated], champion: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a build without labels (CLI and report): what each detector flags on the
    test rows and what it costs, nothing judged."""
    header = [
        "model",
        "kind",
        "flagged on test",
        "threshold",
        "onnx µs/row",
        "batch µs/row",
        "sklearn µs/row",
        "size KB",
    ]
    rows = []
    for m in models:
        out, lat = m.outputs["test"], m.latency
        assert out.labels is not None and lat is not None
        rows.append(
            [
                m.name + (" ★" if m.name == champion else ""),
                m.kind,
                f"{int(out.labels.sum())}/{len(out.labels)} ({out.labels.mean():.1%})",
                _fmt(m.threshold, 3) if m.threshold is not None else "graph (rank >= 1 - contamination)",
                _fmt(lat.onnx_single_row_us, 1),
                _fmt(lat.onnx_batch_row_us, 2),
                _fmt(lat.sklearn_single_row_us, 1) if lat.sklearn_single_row_us else "–",
                _fmt(len(m.onnx_bytes) / 1024, 1) if m.onnx_bytes is not None else "–",
            ]
        )
    return header, rows


def _agreement(models: list[Evaluated]) -> str:
    """Spearman correlation of the detectors' anomaly ranks on the test rows, and how often their
    flags differ: without labels, the only evidence of how diverse the detectors are."""
    members = [m for m in models if m.kind == "member"]
    outs = [m.outputs["test"] for m in members]
    flags = [o.labels for o in outs]
    names = [m.name for m in members]
    ranks = np.column_stack([o.proba[:, 1] for o in outs if o.proba is not None])
    rho = np.atleast_2d(stats.spearmanr(ranks).statistic) if len(names) > 1 else np.ones((1, 1))
    corr = [[n, *[f"{rho[i][j]:.2f}" for j in range(len(names))]] for i, n in enumerate(names)]
    differ = [
        [n, *[f"{float(np.mean(flags[i] != flags[j])):.3f}" for j in range(len(names))]]
        for i, n in enumerate(names)
    ]
    return (
        "Spearman correlation of anomaly ranks on the test rows:\n\n"
        + _table(["rank corr", *names], corr)
        + "\n\nShare of test rows where two detectors' flags differ:\n\n"
        + _table(["flags differ", *names], differ)
    )


def render_unlabelled(
    ctx: BuildContext, models: list[Evaluated], excluded: list[Evaluated], routing: Routing
) -> str:
    """The report of a build without labels as Markdown."""
    table, fp = ctx.table, ctx.table.fingerprint
    intro = (
        f"Dataset `{fp.source}` ({fp.rows} rows, no target), task **anomaly detection without labels**: "
        f"{len(ctx.x_fit)} rows to fit, {len(ctx.x_test)} held out for the ONNX parity check and the "
        f"flag counts. Each detector runs with its library defaults (a search needs a score, and there "
        f"are no labels to score with) and flags rows whose anomaly rank among the fitting rows is at "
        f"least 1 - contamination ({ctx.contamination:g}). Nothing here is judged: post labels "
        f"(`{table.classes[1]}` / `{table.classes[0]}`) to /feedback and /compare gives each detector's "
        f"precision and recall with intervals and paired tests."
    )
    intro += _dropped(table)
    header, rows = unlabelled_rows(models, routing.champion)
    members = [m for m in models if m.kind == "member"]
    sections = [
        ("Overview", intro),
        (
            "Detectors",
            f"★ champion: **{routing.champion}**. Rule: {routing.rule}.\n\n" + _table(header, rows),
        ),
        ("Agreement between detectors", _agreement(models)),
        ("ONNX parity (export vs scikit-learn on test rows)", _parity(members, excluded)),
    ]
    return f"# Offline report: {table.name}\n\n" + "\n\n".join(f"## {t}\n\n{md}\n" for t, md in sections)


def write(
    out: Path,
    ctx: BuildContext,
    models: list[Evaluated],
    excluded: list[Evaluated],
    facts: ReportFacts,
    metric: str,
    routing: Routing,
) -> None:
    """Write report.md, report.html and plots/ into the staging folder ``out``."""
    if ctx.table.labelled:
        plots = write_plots(out, ctx.table, models, facts, metric)
        md = render(ctx, models, excluded, facts, metric, routing, plots)
    else:
        md = render_unlabelled(ctx, models, excluded, routing)
    (out / "report.md").write_text(md)
    body = markdown.markdown(md, extensions=["tables"], output_format="html")
    title = html.escape(f"Offline report: {ctx.table.name}")
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
