"""The inputs every step of a build shares: the options, the table, its splits and their feeds, the CV
splitter, the costs. Made once (:func:`prepare`), after every option and the table are checked, so a
bad input fails before anything is trained or written."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.model_selection import BaseCrossValidator, train_test_split

from builders import data as data_mod
from builders import export
from builders.anomaly import DEFAULT_CONTAMINATION
from builders.errors import BuildError
from builders.families import all_family_names
from builders.repository import check_root
from builders.search import cv_splitter
from contract.feeds import make_feeds
from contract.manifest import ColumnSpec

SPLITS = ("validation", "test")
SEARCH_STRATEGIES = ("random", "halving")
OUT_OF_FOLD = "out_of_fold"
"""The key of out-of-fold outputs and metrics over train + validation (builders/members.py)."""


@dataclass
class BuildOptions:
    """What `gateway build` was asked for."""

    target: str | None = None
    data: Path | None = None
    dataset: str | None = None
    task: str = "auto"
    out: Path = Path("models")
    name: str | None = None
    budget: int = 8
    time_budget_s: float | None = None
    """Search seconds for the whole build, split equally across families; trials run in a fixed
    order until a family's share is spent (at least one), instead of ``budget`` trials."""
    search: str = "random"
    """"random" (``budget`` seeded random trials per family) or "halving" (successive halving over 3x
    ``budget`` candidates per family; builders/search.py)."""
    families: list[str] | None = None
    contamination: float | None = None
    """--task anomaly: the expected share of anomalies, where detectors flag rows (default: the share
    of anomaly labels in the training split)."""
    anomaly_class: str | None = None
    """--task anomaly: the label that marks an anomaly (default: the rarer one)."""
    text: list[str] | None = None
    """Columns to treat as free text (others are detected: several words, many distinct values)."""
    fp_cost: float | None = None
    fn_cost: float | None = None
    seed: int = 0
    cv_folds: int = 3
    n_jobs: int = 2
    learning_curves: bool = True
    refit: bool = True
    """Refit each member's chosen configuration on train + validation before export (builders/members.py)."""
    dask_scheduler: str | None = None
    """Run the search's fits on this Dask scheduler (builders/distributed.py)."""
    dask_local: int | None = None
    """Or on a local Dask cluster of this many worker processes, started for the build."""


@dataclass(frozen=True)
class BuildContext:
    """Everything a build step reads and no step changes."""

    opts: BuildOptions
    table: data_mod.Table
    x_train: pd.DataFrame
    x_val: pd.DataFrame
    x_test: pd.DataFrame
    y_train: npt.NDArray[Any]
    y_val: npt.NDArray[Any]
    y_test: npt.NDArray[Any]
    feeds: dict[str, dict[str, npt.NDArray[Any]]]
    """split -> graph feeds of its rows, built from raw column values as the service builds them."""
    cv: BaseCrossValidator
    inputs: list[tuple[str, Any]]
    """The ONNX graph inputs every member gets (skl2onnx initial types)."""
    versions: dict[str, str]
    costs: tuple[float, float] | None
    """(FP cost, FN cost) of a binary task, when both were given."""
    target_scale: float
    """Regression: the training target's standard deviation (parity tolerances scale with it)."""

    @property
    def task(self) -> str:
        return self.table.task

    @property
    def goal(self) -> str:
        return self.table.goal

    @property
    def chooses_threshold(self) -> bool:
        """Whether binary models get a decision threshold chosen on validation rows (FP/FN costs, or
        detectors' contamination; builders.members.decision_threshold)."""
        return self.costs is not None or self.table.anomaly

    @property
    def contamination(self) -> float:
        """Where detectors flag rows: the option, or the training split's share of anomalies."""
        if self.opts.contamination is not None:
            return self.opts.contamination
        if not self.table.labelled:
            return DEFAULT_CONTAMINATION
        return float(np.mean(np.asarray(self.y_train) == 1))

    @property
    def classification(self) -> bool:
        return self.table.task != "regression"

    @property
    def n_classes(self) -> int:
        return len(self.table.classes)

    @property
    def ys(self) -> dict[str, npt.NDArray[Any]]:
        return {"validation": self.y_val, "test": self.y_test}

    @cached_property
    def x_fit(self) -> pd.DataFrame:
        """Train + validation: every labelled row but the test split (the refit and out-of-fold rows)."""
        return pd.concat([self.x_train, self.x_val])

    @cached_property
    def y_fit(self) -> npt.NDArray[Any]:
        return np.concatenate([np.asarray(self.y_train), np.asarray(self.y_val)])


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the models, for the cards."""
    out = {"python": platform.python_version()}
    for pkg in ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def frame_feeds(columns: list[ColumnSpec], frame: pd.DataFrame) -> dict[str, npt.NDArray[Any]]:
    """Graph feeds of a frame's rows, through the contract's feed builder from raw column values (as
    the service builds them from JSON records)."""
    return make_feeds(columns, {c.name: frame[c.tensor].tolist() for c in columns})


def split_table(
    table: data_mod.Table, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Train / validation / test (60/20/20), stratified for classification; reproducible from the seed."""
    x, y = table.features, table.y
    classification = table.task != "regression" and table.labelled
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=0.2, random_state=seed, stratify=y if classification else None
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=0.25, random_state=seed, stratify=y_rest if classification else None
        )
    except ValueError as exc:
        raise BuildError(f"--data: too few rows for train/validation/test splits: {exc}") from exc
    return x_train, x_val, x_test, y_train, y_val, y_test


def prepare(opts: BuildOptions, table: data_mod.Table) -> BuildContext:
    """Split the table (options checked and table read by :func:`load_table`); BuildError (nothing
    written) when it is too small."""
    x_train, x_val, x_test, y_train, y_val, y_test = split_table(table, opts.seed)
    task = table.task
    costs = (opts.fp_cost, opts.fn_cost) if task == "binary" and opts.fp_cost and opts.fn_cost else None
    return BuildContext(
        opts=opts,
        table=table,
        x_train=x_train,
        x_val=x_val,
        x_test=x_test,
        y_train=y_train,
        y_val=y_val,
        y_test=y_test,
        feeds={"validation": frame_feeds(table.columns, x_val), "test": frame_feeds(table.columns, x_test)},
        cv=cv_splitter(task, opts.cv_folds, opts.seed),
        inputs=export.initial_types(table.columns),
        versions=library_versions(),
        costs=costs,
        target_scale=float(np.std(y_train)) if task == "regression" else 1.0,
    )


def load_table(opts: BuildOptions) -> data_mod.Table:
    """Check every option, then read the table they name: a file or a bundled dataset."""
    check_options(opts)
    if (opts.data is None) == (opts.dataset is None):
        raise BuildError("expected exactly one of --data PATH or --dataset NAME")
    if opts.dataset is not None:
        if opts.dataset not in data_mod.BUNDLED_DATASETS:
            raise BuildError(
                f"--dataset: unknown dataset {opts.dataset!r}; expected one of "
                f"{', '.join(data_mod.BUNDLED_DATASETS)}"
            )
        frame, default_target = data_mod.load_bundled(opts.dataset)
        target = opts.target or default_target
        task = data_mod.DEFAULT_TASKS.get(opts.dataset, opts.task) if opts.task == "auto" else opts.task
        return data_mod.prepare(
            frame,
            target,
            task,
            opts.name or opts.dataset,
            data_mod.dataset_source(opts.dataset),
            data_mod.frame_digest(frame),
            text=opts.text or (),
            anomaly_class=opts.anomaly_class,
        )
    assert opts.data is not None
    if not opts.target and opts.task != "anomaly":
        raise BuildError("--target: required with --data (only --task anomaly can build without labels)")
    frame, digest = data_mod.read_table(opts.data)
    return data_mod.prepare(
        frame,
        opts.target or None,
        opts.task,
        opts.name or safe_name(opts.data.stem),
        str(opts.data),
        digest,
        text=opts.text or (),
        anomaly_class=opts.anomaly_class,
    )


def safe_name(stem: str) -> str:
    """A repository name from a file name: letters, digits, '_', '-', '.' (at most 64)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in stem).strip("_.-")
    return (cleaned or "model")[:64]


def check_options(opts: BuildOptions) -> None:
    """Every option checked before the table is read."""
    if opts.budget < 1:
        raise BuildError(f"--budget: expected a positive number of trials, got {opts.budget}")
    if opts.time_budget_s is not None and not (opts.time_budget_s > 0 and np.isfinite(opts.time_budget_s)):
        raise BuildError(f"--time-budget: expected a positive number of seconds, got {opts.time_budget_s}")
    if opts.search not in SEARCH_STRATEGIES:
        raise BuildError(f"--search: expected one of {', '.join(SEARCH_STRATEGIES)}, got {opts.search!r}")
    if opts.search == "halving" and opts.time_budget_s is not None:
        raise BuildError("--search halving: expected a trial budget (--budget), not --time-budget")
    if (opts.fp_cost is None) != (opts.fn_cost is None):
        raise BuildError("--fp-cost and --fn-cost: expected both or neither")
    for flag, value in (("--fp-cost", opts.fp_cost), ("--fn-cost", opts.fn_cost)):
        if value is not None and not (value > 0 and np.isfinite(value)):
            raise BuildError(f"{flag}: expected a positive number, got {value}")
    if opts.contamination is not None:
        if "anomaly" not in (opts.task, data_mod.DEFAULT_TASKS.get(opts.dataset or "")):
            raise BuildError("--contamination: only with --task anomaly")
        if not 0 < opts.contamination < 0.5:
            raise BuildError(f"--contamination: expected a share in (0, 0.5), got {opts.contamination}")
    if opts.cv_folds < 2:
        raise BuildError(f"--cv-folds: expected at least 2, got {opts.cv_folds}")
    if opts.name is not None and safe_name(opts.name) != opts.name:
        raise BuildError(f"--name: expected letters, digits, '_', '-' or '.', got {opts.name!r}")
    unknown = [f for f in opts.families or [] if f not in all_family_names()]
    if unknown:
        raise BuildError(
            f"--families: unknown family {unknown[0]!r}; expected some of "
            f"{', '.join(sorted(all_family_names()))}"
        )
    check_root(opts.out)
