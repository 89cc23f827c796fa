"""The offline report: Markdown and HTML with plots, written into the repository version.

Shows what the model-selection tips ask for: the baseline and the simplest model, every gain measured
against the simplest, the budget each family got and spent, learning curves (now vs later), quality
against latency with its Pareto front, error correlation behind the ensembles, and what correlation
cost the vote compared with independent members.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix

from builders.scoring import oriented, pareto_front
from contract.manifest import Routing

METRIC_COLUMNS = {
    "binary": ["accuracy", "f1", "log_loss", "roc_auc"],
    "multiclass": ["accuracy", "f1", "log_loss", "roc_auc"],
    "regression": ["rmse", "mae", "r2"],
}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def leaderboard_rows(
    models: list[Any], metric: str, task: str, simplest: str | None, champion: str
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the leaderboard (shared by the CLI table and the report)."""
    metrics = METRIC_COLUMNS[task] + (
        ["cost"] if any("cost" in m.metrics.get("test", {}) for m in models) else []
    )
    points = [
        (m.name, oriented(metric, m.metrics["test"][metric]), m.card["latency"].onnx_single_row_us)
        for m in models
    ]
    front = pareto_front(points)
    ref = next((m for m in models if m.name == simplest), None)
    ordered = sorted(models, key=lambda m: -oriented(metric, m.metrics["test"][metric]))
    header = [
        "model",
        "kind",
        *metrics,
        f"Δ{metric} vs {simplest}",
        "onnx µs/row",
        "batch µs/row",
        "sklearn µs/row",
        "size KB",
        "train s",
        "trials",
        "pareto",
        "threshold",
    ]
    rows = []
    for m in ordered:
        t = m.metrics["test"]
        lat = m.card["latency"]
        gain = t[metric] - ref.metrics["test"][metric] if ref is not None else None
        search = m.card.get("search")
        name = m.name + (" ★" if m.name == champion else "")
        rows.append(
            [
                name,
                m.kind,
                *[_fmt(t.get(k)) for k in metrics],
                ("+" if gain is not None and gain >= 0 else "") + _fmt(gain),
                _fmt(lat.onnx_single_row_us, 1),
                _fmt(lat.onnx_batch_row_us, 2),
                _fmt(lat.sklearn_single_row_us, 0) if lat.sklearn_single_row_us else "–",
                _fmt(m.card.get("file_size_bytes", 0) / 1024, 1) if m.card.get("file_size_bytes") else "–",
                _fmt(m.card.get("training_seconds"), 1),
                f"{search.trials_run}/{search.budget_trials}" if search else "–",
                "✓" if m.name in front else "",
                _fmt(m.threshold, 3) if m.threshold is not None else "–",
            ]
        )
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plots(
    out: Path, table: Any, models: list[Any], extras: dict[str, Any], metric: str, champion: str
) -> dict[str, str]:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    files: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = pareto_front(
        [
            (m.name, oriented(metric, m.metrics["test"][metric]), m.card["latency"].onnx_single_row_us)
            for m in models
        ]
    )
    for m in models:
        lat = m.card["latency"].onnx_single_row_us
        ax.scatter(
            lat,
            m.metrics["test"][metric],
            c="tab:red" if m.name in front else "tab:blue",
            marker="s" if m.kind == "ensemble" else "o",
        )
        ax.annotate(
            m.name, (lat, m.metrics["test"][metric]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.set_xlabel("onnxruntime single-row latency (µs, log)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title("Quality against latency (red: Pareto front, squares: ensembles)")
    fig.tight_layout()
    fig.savefig(plots / "pareto.png", dpi=90)
    plt.close(fig)
    files["pareto"] = "plots/pareto.png"

    curves = [m for m in models if m.card.get("learning_curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in curves:
            pts = m.card["learning_curve"]
            ax.errorbar(
                [p.train_rows for p in pts],
                [abs(p.score) for p in pts],
                yerr=[p.score_std for p in pts],
                label=m.name + (" ↗" if m.card.get("still_improving") else ""),
                capsize=2,
                marker="o",
                ms=3,
            )
        ax.set_xlabel("training rows")
        ax.set_ylabel("cross-validated " + ("RMSE" if metric == "rmse" else "accuracy"))
        ax.set_title("Learning curves (↗: still improving at full size)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / "learning_curves.png", dpi=90)
        plt.close(fig)
        files["learning_curves"] = "plots/learning_curves.png"

    corr = extras.get("error_correlation")
    if corr:
        names, matrix = corr["names"], np.asarray(corr["matrix"])
        fig, ax = plt.subplots(figsize=(6, 5))
        im = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im)
        ax.set_title("Correlation of validation errors")
        fig.tight_layout()
        fig.savefig(plots / "error_correlation.png", dpi=90)
        plt.close(fig)
        files["error_correlation"] = "plots/error_correlation.png"

    champ = next(m for m in models if m.name == champion)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    y_test = extras["y_test"]
    if table.task == "regression":
        pred = champ.outputs["test"]["pred"]
        ax.scatter(pred, y_test - pred, s=8)
        ax.axhline(0, color="grey")
        ax.set_xlabel("prediction")
        ax.set_ylabel("residual")
        ax.set_title(f"Residuals of the champion ({champion}), test")
        fname = "residuals.png"
    else:
        cm = confusion_matrix(y_test, champ.outputs["test"]["labels"], labels=list(range(len(table.classes))))
        ax.imshow(cm, cmap="Blues")
        labels = [str(c) for c in table.classes]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix of the champion ({champion}), test")
        fname = "confusion_matrix.png"
    fig.tight_layout()
    fig.savefig(plots / fname, dpi=90)
    plt.close(fig)
    files["champion"] = f"plots/{fname}"
    return files


def write(
    out: Path,
    table: Any,
    models: list[Any],
    excluded: list[Any],
    extras: dict[str, Any],
    metric: str,
    routing: Routing,
    opts: Any,
) -> None:
    """Write report.md, report.html and plots/ into the staging folder ``out``."""
    champion = routing.champion
    simplest = extras.get("simplest")
    plots = _plots(out, table, models, extras, metric, champion)
    header, rows = leaderboard_rows(models, metric, table.task, simplest, champion)
    members = [m for m in models if m.kind == "member"]
    budget_rows = [
        [
            m.name,
            str(m.card["search"].budget_trials),
            str(m.card["search"].trials_run),
            str(m.card["search"].cv_folds),
            str(m.card["search"].seed),
            _fmt(m.card["search"].seconds, 1),
            _fmt(abs(m.card["search"].best_cv_score or 0.0)),
            "yes" if m.card.get("still_improving") else "no",
            m.description,
        ]
        for m in members
    ]
    budget_header = [
        "family",
        "budget (trials)",
        "trials run",
        "CV folds",
        "seed",
        "search s",
        "best CV score",
        "still improving",
        "assumptions",
    ]
    parity_rows = [
        [
            m.name,
            "pass" if m.card["parity"].passed else "FAIL",
            str(m.card["parity"].rows),
            f"{m.card['parity'].max_abs_diff:.2e}",
            f"{m.card['parity'].tolerance:.0e}",
            str(m.card["parity"].tie_mismatches),
        ]
        for m in members
    ] + [[m.name, "EXCLUDED", "–", "–", "–", m.excluded] for m in excluded]
    parity_header = ["model", "parity", "rows", "max |Δ|", "tolerance", "tie flips / reason"]

    sections: list[tuple[str, str, str]] = []  # (title, markdown, html)
    intro = (
        f"Dataset `{table.fingerprint.source}` ({table.fingerprint.rows} rows, target `{table.fingerprint.target}`, "
        f"task **{table.task}**); splits: {extras['split_rows']}. Every family got the same budget: "
        f"{opts.budget} random-search trials, {opts.cv_folds}-fold CV, seed {opts.seed}. All metrics are on the "
        f"held-out test split, computed from the ONNX outputs the service serves."
    )
    if table.dropped:
        intro += " Dropped columns: " + "; ".join(f"`{d.name}` ({d.reason})" for d in table.dropped) + "."
    sections.append(("Overview", intro, html.escape(intro)))
    lb_note = (
        f"★ champion: **{champion}**. Rule: {routing.rule}. Baseline: `{extras['baseline']}`; every gain "
        f"is measured against the simplest model, `{simplest}`. Pareto ✓: no other model is both better "
        f"and faster."
    )
    sections.append(
        (
            "Leaderboard",
            lb_note + "\n\n" + _md_table(header, rows),
            html.escape(lb_note) + _html_table(header, rows),
        )
    )
    sections.append(
        (
            "Equal search budget and learning curves",
            _md_table(budget_header, budget_rows),
            _html_table(budget_header, budget_rows),
        )
    )
    sections.append(
        (
            "ONNX parity (export vs scikit-learn on test rows)",
            _md_table(parity_header, parity_rows),
            _html_table(parity_header, parity_rows),
        )
    )
    corr = extras.get("error_correlation")
    if corr:
        names = corr["names"]
        corr_rows = [[n, *[f"{v:.2f}" for v in row]] for n, row in zip(names, corr["matrix"], strict=True)]
        text = f"Members chosen: **{', '.join(extras['ensemble_members'])}**. Rule: {extras['ensemble_rule']}"
        md = text + "\n\n" + _md_table(["error corr", *names], corr_rows)
        htm = html.escape(text) + _html_table(["error corr", *names], corr_rows)
        dis = extras.get("disagreement")
        if dis:
            dis_rows = [
                [n, *[f"{v:.2f}" for v in row]] for n, row in zip(dis["names"], dis["matrix"], strict=True)
            ]
            md += "\n\nDisagreement (share of validation rows where two members' labels differ):\n\n"
            md += _md_table(["disagreement", *dis["names"]], dis_rows)
            htm += "<p>Disagreement</p>" + _html_table(["disagreement", *dis["names"]], dis_rows)
        vi = extras.get("vote_independence")
        if vi:
            line = (
                f"Vote of {', '.join(vi['members'])} (test accuracies "
                f"{', '.join(f'{a:.3f}' for a in vi['member_accuracies'])}): independent members would vote "
                f"to **{vi['independent_accuracy']:.4f}**; measured **{vi['measured_accuracy']:.4f}**. The gap "
                f"is what correlated errors cost."
            )
            md += "\n\n" + line
            htm += f"<p>{html.escape(line)}</p>"
        sections.append(("Ensembles and diversity", md, htm))

    md_parts = [f"# Offline report: {table.name}\n"]
    html_parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Offline report: "
        f"{html.escape(table.name)}</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        "img{max-width:48%}</style></head><body>",
        f"<h1>Offline report: {html.escape(table.name)}</h1>",
    ]
    for title, md, htm in sections:
        md_parts.append(f"## {title}\n\n{md}\n")
        html_parts.append(f"<h2>{html.escape(title)}</h2><div>{htm}</div>")
    md_parts.append("## Plots\n\n" + "\n".join(f"![{k}]({v})" for k, v in plots.items()) + "\n")
    html_parts.append("<h2>Plots</h2>" + "".join(f"<img src='{v}' alt='{k}'>" for k, v in plots.items()))
    html_parts.append("</body></html>")
    (out / "report.md").write_text("\n".join(md_parts))
    (out / "report.html").write_text("".join(html_parts))
