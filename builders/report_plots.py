"""The report's plots: quality against latency with its Pareto front, learning curves, the correlation
of members' errors, and the champion's confusion matrix or residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix

from builders.evaluated import Evaluated, ReportFacts
from builders.scoring import oriented, pareto_front


def _latency(m: Evaluated) -> float:
    assert m.latency is not None
    return m.latency.onnx_single_row_us


def write_plots(
    out: Path, table: Any, models: list[Evaluated], facts: ReportFacts, metric: str
) -> dict[str, str]:
    """plots/*.png in ``out``: Pareto front, learning curves, error correlation, the champion's errors;
    returns {name: relative path}."""
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    files: dict[str, str] = {}
    _pareto(plots, models, metric, files)
    _curves(plots, models, metric, files)
    _correlation(plots, facts, files)
    _champion(plots, table, models, facts, files)
    return files


def _pareto(plots: Path, models: list[Evaluated], metric: str, files: dict[str, str]) -> None:
    """Test score against single-row latency, the Pareto front in red."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = pareto_front([(m.name, oriented(metric, m.metrics["test"][metric]), _latency(m)) for m in models])
    for m in models:
        lat = _latency(m)
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


def _curves(plots: Path, models: list[Evaluated], metric: str, files: dict[str, str]) -> None:
    """Cross-validated score against training rows, per family."""
    curves = [m for m in models if m.learning_curve]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in curves:
            pts = m.learning_curve
            ax.errorbar(
                [p.train_rows for p in pts],
                [abs(p.score) for p in pts],
                yerr=[p.score_std for p in pts],
                label=m.name + (" ↗" if m.still_improving else ""),
                capsize=2,
                marker="o",
                ms=3,
            )
        ax.set_xlabel("training rows")
        ax.set_ylabel("cross-validated " + ("RMSE" if metric == "rmse" else metric.replace("_", " ")))
        ax.set_title("Learning curves (↗: still improving at full size)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / "learning_curves.png", dpi=90)
        plt.close(fig)
        files["learning_curves"] = "plots/learning_curves.png"


def _correlation(plots: Path, facts: ReportFacts, files: dict[str, str]) -> None:
    """The correlation of the members' validation errors."""
    corr = facts.error_correlation
    if corr is not None:
        names, matrix = corr.names, np.asarray(corr.matrix)
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


def _champion(
    plots: Path, table: Any, models: list[Evaluated], facts: ReportFacts, files: dict[str, str]
) -> None:
    """The champion's confusion matrix (or residuals) on the test split."""
    champion = facts.champion
    champ = next(m for m in models if m.name == champion)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    y_test = facts.y_test
    if table.task == "regression":
        pred = champ.outputs["test"].values
        assert pred is not None
        ax.scatter(pred, y_test - pred, s=8)
        ax.axhline(0, color="grey")
        ax.set_xlabel("prediction")
        ax.set_ylabel("residual")
        ax.set_title(f"Residuals of the champion ({champion}), test")
        fname = "residuals.png"
    else:
        cm = confusion_matrix(y_test, champ.outputs["test"].labels, labels=list(range(len(table.classes))))
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
