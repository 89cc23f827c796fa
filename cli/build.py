"""`gateway build`: arguments, live progress lines and the final leaderboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gateway build`."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="CSV or Parquet table")
    src.add_argument(
        "--dataset", help="a dataset bundled with scikit-learn: breast_cancer, wine, digits, iris, diabetes"
    )
    parser.add_argument("--target", help="target column (bundled datasets: 'target')")
    parser.add_argument(
        "--task",
        choices=["auto", "binary", "multiclass", "regression", "anomaly"],
        default="auto",
        help="anomaly: detectors train on the features alone; the target's rarer label is the anomaly",
    )
    parser.add_argument(
        "--anomaly-class",
        metavar="LABEL",
        help="--task anomaly: the target's label that marks an anomaly (default: the rarer label)",
    )
    parser.add_argument(
        "--contamination",
        type=float,
        help="--task anomaly: expected share of anomalies, where detectors flag (default: the labels' share)",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="repository root (default: models)")
    parser.add_argument("--name", help="model name in the repository (default: dataset or file name)")
    parser.add_argument("--budget", type=int, default=8, help="search trials per family (same for all)")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="search seconds for the build, split equally across families (instead of --budget trials)",
    )
    parser.add_argument(
        "--search",
        choices=["random", "halving"],
        default="random",
        help="random: --budget seeded trials per family; halving: successive halving over 3x --budget "
        "candidates per family (most of them on a sample of the rows)",
    )
    parser.add_argument("--families", nargs="+", help="families to train (baseline and simplest always run)")
    parser.add_argument(
        "--text",
        nargs="+",
        metavar="COLUMN",
        help="free-text columns (TF-IDF inside the graph); string columns of several words with many "
        "distinct values are found without it",
    )
    parser.add_argument("--fp-cost", type=float, help="cost of a false positive (binary; with --fn-cost)")
    parser.add_argument("--fn-cost", type=float, help="cost of a false negative (binary; with --fp-cost)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cv-folds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="parallel fits (default 2)")
    parser.add_argument("--no-learning-curves", action="store_true", help="skip learning curves (faster)")
    parser.add_argument(
        "--no-refit",
        action="store_true",
        help="serve the models fitted on the training split only (default: refit on train + validation)",
    )
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help="log the build to MLflow: a tracking server (http://...) or store URI; without URI, a "
        "SQLite store in the repository root (<out>/.mlflow/)",
    )
    dask = parser.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask-scheduler", metavar="ADDRESS", help="run the search's fits on this Dask scheduler"
    )
    dask.add_argument(
        "--dask-local", type=int, metavar="N", help="start a local Dask cluster of N workers for the search"
    )


def run(args: argparse.Namespace) -> int:
    """Run a build; BuildError exits 2 with one line and nothing written."""
    from builders.build import BuildOptions, run_build
    from builders.errors import BuildError
    from builders.report import leaderboard_rows, unlabelled_rows

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)
    opts = BuildOptions(
        target=args.target,
        data=args.data,
        dataset=args.dataset,
        task=args.task,
        out=args.out,
        name=args.name,
        budget=args.budget,
        time_budget_s=args.time_budget,
        search=args.search,
        families=args.families,
        text=args.text,
        contamination=args.contamination,
        anomaly_class=args.anomaly_class,
        fp_cost=args.fp_cost,
        fn_cost=args.fn_cost,
        seed=args.seed,
        cv_folds=args.cv_folds,
        n_jobs=args.jobs,
        learning_curves=not args.no_learning_curves,
        refit=not args.no_refit,
        dask_scheduler=args.dask_scheduler,
        dask_local=args.dask_local,
    )
    uri = None
    try:
        if args.mlflow is not None:
            from builders import tracking

            uri = args.mlflow or tracking.default_uri(args.out)
            tracking.check_uri(uri)
        result = run_build(opts, progress=lambda msg: console.print(msg, markup=False))
    except BuildError as exc:
        print(f"gateway build: error: {exc}", file=sys.stderr)
        return 2
    ok = [m for m in result.models if not m.excluded]
    manifest = result.manifest
    if not manifest.dataset.target:  # built without labels: nothing is judged, nothing to rank
        header, rows = unlabelled_rows(ok, manifest.routing.champion)
        title = f"Detectors: {manifest.name} v{manifest.version} (no labels; test split flags)"
        keep = list(range(len(header)))
    else:
        header, rows = leaderboard_rows(
            ok,
            manifest.primary_metric,
            manifest.task,
            result.facts.simplest,
            manifest.routing.champion,
        )
        title = (
            f"Leaderboard: {manifest.name} v{manifest.version} (test split; oof: out-of-fold over train + "
            "validation, what the champion rule judges)"
        )
        # The terminal gets the essentials; report.md/html have every column.
        keep = [
            i for i, h in enumerate(header) if h not in {"batch µs/row", "sklearn µs/row", "train s", "f1"}
        ]
    board = Table(title=title)
    for i in keep:
        board.add_column(header[i])
    for r in rows:
        board.add_row(*(r[i] for i in keep))
    console.print(board)
    console.print(
        f"wrote {result.path} in {result.seconds:.1f}s; report: {result.path / 'report.html'}", markup=False
    )
    return 0 if uri is None else _track(uri, result, vars(args), console)


def _track(uri: str, result: Any, options: dict[str, Any], console: Console) -> int:
    """Log the written version to MLflow; a failure says the version is written and not logged."""
    from builders import tracking

    logged = {k: v for k, v in options.items() if k not in ("command", "func", "mlflow") and v is not None}
    try:
        run_id = tracking.log_version(uri, result.path, logged, result.seconds)
    except Exception as exc:  # any MLflow failure: the repository stays written (nothing to undo)
        print(
            f"gateway build: error: {result.path} is written, but logging it to MLflow at {uri} failed: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    console.print(f"logged to MLflow at {uri}: run {run_id}", markup=False)
    return 0
