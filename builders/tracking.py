"""Experiment tracking: one written repository version logged to MLflow (`gateway build --mlflow`).

Everything logged is read back from the version folder (manifest, cards, report, graphs), so MLflow
holds what serves, not an in-memory story of it. One parent run per build (the build's options, the
champion's metrics, the report, the manifest), one nested run per model (family, hyperparameters,
search trials and seconds, metrics per split, latency; its ONNX graph and card).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from builders.errors import BuildError
from contract.verify import load_card, load_manifest

TRACKING_DIR = ".mlflow"
"""The default store, inside the repository root (dot folders are never read as models)."""
SCHEMES = {"sqlite", "http", "https", "postgresql", "mysql"}
"""MLflow 3.18 refuses a plain file store (maintenance mode): SQLite is its local store."""


def default_uri(root: Path) -> str:
    return f"sqlite:///{(root / TRACKING_DIR / 'mlflow.db').resolve()}"


def check_uri(uri: str) -> None:
    """Before the build: a URI MLflow can store runs at, and a tracking server that answers (an HTTP
    URI), so a bad --mlflow fails with exit code 2 before anything is trained or written."""
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise BuildError(f"--mlflow: expected a tracking URI ({', '.join(sorted(SCHEMES))}), got {uri!r}")
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5.0) as answer:
                answer.read()
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            raise BuildError(f"--mlflow: no MLflow tracking server answers at {uri}: {exc}") from exc


def log_version(uri: str, version_dir: Path, options: dict[str, Any], seconds: float) -> str:
    """Log one repository version; returns the parent run's id."""
    import mlflow

    local = _sqlite_file(uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(version_dir)
    mlflow.set_tracking_uri(uri)
    experiment = f"gateway/{manifest.name}"
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        # a local store keeps its artifacts beside it, not in the working directory
        artifacts = (local.parent / "artifacts").as_uri() if local is not None else None
        experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
    else:
        experiment_id = found.experiment_id
    champion = manifest.routing.champion
    cards: dict[str, tuple[str, str | None]] = {m.name: (m.card, m.path) for m in manifest.members}
    cards.update({e.name: (e.card, e.meta_model) for e in manifest.ensembles})
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{manifest.name} v{manifest.version}"
    ) as parent:
        mlflow.set_tags(
            {
                "gateway.version": str(manifest.version),
                "gateway.champion": champion,
                "gateway.repository": str(version_dir.resolve()),
                "gateway.dataset_sha256": manifest.dataset.sha256,
                "gateway.task": manifest.task,
            }
        )
        mlflow.log_params({k: _param(v) for k, v in options.items()})
        mlflow.log_metric("build_seconds", seconds)
        champion_card = load_card(version_dir / cards[champion][0])
        mlflow.log_metrics(_metrics(champion_card.metrics, prefix="champion."))
        for name in ("report.md", "report.html", "manifest.json"):
            mlflow.log_artifact(str(version_dir / name))
        if (version_dir / "plots").is_dir():
            mlflow.log_artifacts(str(version_dir / "plots"), "plots")
        for name, (card_path, graph) in cards.items():
            card = load_card(version_dir / card_path)
            with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True):
                mlflow.set_tags({"gateway.kind": card.kind, "gateway.champion": str(name == champion)})
                params: dict[str, Any] = {"family": card.family, "trained_on": card.trained_on}
                params.update({f"hp.{k}": _param(v) for k, v in card.hyperparameters.items()})
                if card.search is not None:
                    params.update(
                        {
                            "search.budget_trials": card.search.budget_trials,
                            "search.budget_seconds": card.search.budget_seconds,
                            "search.cv_folds": card.search.cv_folds,
                            "search.seed": card.search.seed,
                        }
                    )
                mlflow.log_params({k: _param(v) for k, v in params.items()})
                metrics = _metrics(card.metrics)
                if card.search is not None:
                    metrics["search.trials_run"] = float(card.search.trials_run)
                    metrics["search.seconds"] = card.search.seconds
                    if card.search.best_cv_score is not None:
                        metrics["search.best_cv_score"] = card.search.best_cv_score
                if card.latency is not None:
                    metrics["latency.onnx_single_row_us"] = card.latency.onnx_single_row_us
                mlflow.log_metrics(metrics)
                mlflow.log_artifact(str(version_dir / card_path))
                if graph is not None:
                    mlflow.log_artifact(str(version_dir / graph))
        return str(parent.info.run_id)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store's URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _metrics(by_split: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{split}.{k}": float(v) for split, d in by_split.items() for k, v in d.items()}


def _param(value: Any) -> str:
    """MLflow parameters are strings of at most 6,000 characters."""
    return str(value)[:6000]
