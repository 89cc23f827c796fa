"""The build: split, search every family on an equal budget, export, verify, evaluate, ensemble, write.

Every number on the leaderboard is computed from the ONNX outputs the service will serve, through
the same feed builder (contract.feeds) and the same combiners (contract.combine).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline

from builders import data as data_mod
from builders import ensembles as ens
from builders import export, latency, scoring
from builders.errors import BuildError
from builders.families import Family, all_family_names, families_for
from builders.preprocess import make_pipeline
from builders.repository import check_root, publish, staging
from builders.search import cv_splitter, learning_points, search
from contract import combine as combiners
from contract.feeds import make_feeds
from contract.manifest import (
    CARD_FILE,
    ColumnSpec,
    EnsembleSpec,
    LatencyRecord,
    Manifest,
    MemberSpec,
    ModelCard,
    ParityRecord,
    Routing,
)

PROVIDERS = ["CPUExecutionProvider"]
Progress = Callable[[str], None]


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
    families: list[str] | None = None
    fp_cost: float | None = None
    fn_cost: float | None = None
    seed: int = 0
    cv_folds: int = 3
    n_jobs: int = 2
    learning_curves: bool = True


@dataclass
class Evaluated:
    """One model's outputs and card material, member or ensemble."""

    name: str
    kind: str
    family: str
    description: str
    outputs: dict[str, dict[str, npt.NDArray[Any]]] = field(default_factory=dict)
    """split -> {"labels", "proba"} or {"pred"} (served outputs, threshold applied)."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    onnx_bytes: bytes | None = None
    session: ort.InferenceSession | None = None
    pipeline: Pipeline | None = None
    excluded: str = ""
    threshold: float | None = None


@dataclass
class BuildResult:
    """What the build produced, for the CLI and the report."""

    path: Path
    manifest: Manifest
    models: list[Evaluated]
    seconds: float
    extras: dict[str, Any]


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the models, for the cards."""
    out = {"python": platform.python_version()}
    for pkg in ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    raw = model if isinstance(model, bytes) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(raw, sess_options=opts, providers=PROVIDERS)


def _frame_feeds(columns: list[ColumnSpec], frame: pd.DataFrame) -> dict[str, npt.NDArray[Any]]:
    # Through the service's own feed builder, from raw column-name records, as online.
    return make_feeds(columns, {c.name: frame[c.tensor].tolist() for c in columns})


def _load(opts: BuildOptions) -> data_mod.Table:
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
        return data_mod.prepare(
            frame,
            target,
            opts.task,
            opts.name or opts.dataset,
            f"sklearn:{opts.dataset}",
            data_mod.frame_digest(frame),
        )
    assert opts.data is not None
    if not opts.target:
        raise BuildError("--target: required with --data")
    frame, digest = data_mod.read_table(opts.data)
    return data_mod.prepare(
        frame, opts.target, opts.task, opts.name or _safe_name(opts.data.stem), str(opts.data), digest
    )


def _safe_name(stem: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in stem).strip("_.-")
    return (cleaned or "model")[:64]


def _check_options(opts: BuildOptions) -> None:
    if opts.budget < 1:
        raise BuildError(f"--budget: expected a positive number of trials, got {opts.budget}")
    if (opts.fp_cost is None) != (opts.fn_cost is None):
        raise BuildError("--fp-cost and --fn-cost: expected both or neither")
    for flag, value in (("--fp-cost", opts.fp_cost), ("--fn-cost", opts.fn_cost)):
        if value is not None and not (value > 0 and np.isfinite(value)):
            raise BuildError(f"{flag}: expected a positive number, got {value}")
    if opts.cv_folds < 2:
        raise BuildError(f"--cv-folds: expected at least 2, got {opts.cv_folds}")
    if opts.name is not None and _safe_name(opts.name) != opts.name:
        raise BuildError(f"--name: expected letters, digits, '_', '-' or '.', got {opts.name!r}")
    unknown = [f for f in opts.families or [] if f not in all_family_names()]
    if unknown:
        raise BuildError(
            f"--families: unknown family {unknown[0]!r}; expected some of "
            f"{', '.join(sorted(all_family_names()))}"
        )
    check_root(opts.out)


def _classifier_outputs(
    session: ort.InferenceSession, feeds: dict[str, npt.NDArray[Any]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    label, proba = session.run(["label", "probabilities"], feeds)
    return np.asarray(label, dtype=np.int64), np.asarray(proba)


def split_table(
    table: data_mod.Table, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Train / validation / test (60/20/20), stratified for classification; reproducible from the seed."""
    x, y = table.features, table.y
    classification = table.task != "regression"
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


def run_build(opts: BuildOptions, progress: Progress = lambda _msg: None) -> BuildResult:
    """Run the whole build; raises BuildError on bad input before anything is written."""
    started = time.perf_counter()
    _check_options(opts)
    table = _load(opts)
    fams = families_for(table.task, opts.families)
    if opts.families:
        progress(f"families: {', '.join(f.name for f in fams)} (baseline and simplest always included)")
    for note in table.notes:
        progress(note)
    for d in table.dropped:
        progress(f"dropped column {d.name!r}: {d.reason}")
    task = table.task
    classification = task != "regression"
    n_classes = len(table.classes)
    costs = (opts.fp_cost, opts.fn_cost) if task == "binary" and opts.fp_cost and opts.fn_cost else None
    if opts.fp_cost is not None and task != "binary":
        progress(f"note: --fp-cost/--fn-cost apply to binary tasks only; ignored for {task}")

    x = table.features
    x_train, x_val, x_test, y_train, y_val, y_test = split_table(table, opts.seed)
    splits = {"validation": (x_val, y_val), "test": (x_test, y_test)}
    feeds = {s: _frame_feeds(table.columns, xs) for s, (xs, _) in splits.items()}
    cv = cv_splitter(task, opts.cv_folds, opts.seed)
    progress(
        f"{table.name}: {task}, {len(x)} rows ({len(x_train)} train / {len(x_val)} validation / "
        f"{len(x_test)} test), {len(table.columns)} columns; budget {opts.budget} trials x "
        f"{opts.cv_folds} folds per family, seed {opts.seed}"
    )
    inputs = export.initial_types(table.columns)
    versions = library_versions()
    scale = float(np.std(y_train)) if not classification else 1.0

    models: list[Evaluated] = []
    for i, fam in enumerate(fams, 1):
        ev = _train_member(fam, table, x_train, y_train, x_test, y_test, cv, inputs, opts, scale, feeds, task)
        models.append(ev)
        if ev.excluded:
            progress(f"[{i}/{len(fams)}] {fam.name:<14} EXCLUDED: {ev.excluded}")
            continue
        search_rec = ev.card["search"]
        progress(
            f"[{i}/{len(fams)}] {fam.name:<14} {search_rec.trials_run:>2}/{search_rec.budget_trials} trials "
            f"in {search_rec.seconds:6.1f}s  cv {search_rec.scoring.removeprefix('neg_')} "
            f"{abs(search_rec.best_cv_score):.4f}  onnx {ev.card['latency'].onnx_single_row_us:7.1f}µs/row"
        )

    members = [m for m in models if not m.excluded]
    # Decision thresholds come from validation rows only; test metrics then show what they buy.
    for m in members:
        _score_member(m, y_val, y_test, n_classes, task, costs, feeds)

    metric = scoring.primary_metric(task)
    baseline = next(m for m in members if m.card.get("role") == "baseline")
    pool = [m for m in members if m.card.get("role") != "baseline"]
    extras: dict[str, Any] = {
        "costs": costs,
        "split_rows": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "y_test": y_test,
    }
    ensembles: list[Evaluated] = []
    if len(pool) >= 2:
        ensembles = _build_ensembles(
            pool,
            baseline,
            table,
            task,
            n_classes,
            x_train,
            y_train,
            y_val,
            y_test,
            cv,
            opts,
            costs,
            feeds,
            extras,
            progress,
            x_test,
        )
    everything = members + ensembles

    candidates = [
        scoring.Candidate(
            name=m.name,
            validation_score=m.metrics["validation"][metric],
            latency_us=m.card["latency"].onnx_single_row_us,
            eligible=m.card.get("role") != "baseline" and m.card["parity"].passed,
        )
        for m in everything
    ]
    champion, rule = scoring.choose_champion(candidates, metric, len(y_val))
    routing = Routing(
        champion=champion,
        shadow=[m.name for m in everything if m.name != champion],
        shadow_fraction=1.0,
        rule=rule,
    )
    progress(f"champion: {champion} ({rule})")
    extras["champion"] = champion
    extras["baseline"] = baseline.name
    extras["simplest"] = next((m.name for m in members if m.card.get("role") == "simplest"), None)

    from builders import report  # matplotlib is slow to import; only needed at the end

    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with staging(opts.out, table.name) as tmp:
        member_specs: list[MemberSpec] = []
        ensemble_specs: list[EnsembleSpec] = []
        for m in everything:
            folder = tmp / ("members" if m.kind == "member" else "ensembles") / m.name
            folder.mkdir(parents=True)
            onnx_rel: str | None = None
            if m.onnx_bytes is not None:
                fname = "model.onnx" if m.kind == "member" else "meta.onnx"
                (folder / fname).write_bytes(m.onnx_bytes)
                onnx_rel = str((folder / fname).relative_to(tmp))
                m.card["sha256"] = hashlib.sha256(m.onnx_bytes).hexdigest()
                m.card["file_size_bytes"] = len(m.onnx_bytes)
            card = _card(m, table, versions, metric)
            (folder / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
            card_rel = str((folder / CARD_FILE).relative_to(tmp))
            if m.kind == "member":
                assert onnx_rel is not None
                member_specs.append(
                    MemberSpec(
                        name=m.name,
                        family=m.family,
                        path=onnx_rel,
                        card=card_rel,
                        sha256=m.card["sha256"],
                        outputs=["label", "probabilities"] if classification else ["variable"],
                    )
                )
            else:
                ensemble_specs.append(
                    EnsembleSpec(
                        name=m.name,
                        strategy=m.card["strategy"],
                        members=m.card["members"],
                        weights=m.card.get("weights"),
                        meta_model=onnx_rel,
                        meta_sha256=m.card.get("sha256") if onnx_rel else None,
                        card=card_rel,
                    )
                )
        excluded = [m for m in models if m.excluded]
        report.write(tmp, table, everything, excluded, extras, metric, routing, opts)

        def make_manifest(version: int, files: dict[str, str]) -> Manifest:
            return Manifest(
                name=table.name,
                version=version,
                created_at=created,
                task=task,
                target=table.fingerprint.target,
                inputs=table.columns,
                dropped_columns=table.dropped,
                classes=table.classes,
                primary_metric=metric,
                members=member_specs,
                ensembles=ensemble_specs,
                routing=routing,
                dataset=table.fingerprint,
                library_versions=versions,
                files=files,
                opset=dict(export.TARGET_OPSET),
            )

        path = publish(tmp, make_manifest)
    from contract.verify import load_manifest

    manifest = load_manifest(path)
    return BuildResult(
        path=path,
        manifest=manifest,
        models=models + ensembles,
        seconds=time.perf_counter() - started,
        extras=extras,
    )


def _train_member(
    fam: Family,
    table: data_mod.Table,
    x_train: pd.DataFrame,
    y_train: npt.NDArray[Any],
    x_test: pd.DataFrame,
    y_test: npt.NDArray[Any],
    cv: Any,
    inputs: list[tuple[str, Any]],
    opts: BuildOptions,
    scale: float,
    feeds: dict[str, dict[str, npt.NDArray[Any]]],
    task: str,
) -> Evaluated:
    classification = task != "regression"
    ev = Evaluated(name=fam.name, kind="member", family=fam.name, description=fam.assumptions)
    ev.card["role"] = fam.role
    started = time.perf_counter()
    pipeline = make_pipeline(fam, table.columns, opts.seed)
    fitted, params, record = search(
        pipeline,
        fam.space,
        x_train,
        y_train,
        task=task,
        budget=opts.budget,
        cv=cv,
        seed=opts.seed,
        n_jobs=opts.n_jobs,
    )
    ev.pipeline = fitted
    ev.card.update(search=record, hyperparameters=params)
    if opts.learning_curves:
        points, improving = learning_points(fitted, x_train, y_train, task=task, cv=cv, n_jobs=opts.n_jobs)
        ev.card.update(learning_curve=points, still_improving=improving)
    ev.card["training_seconds"] = round(time.perf_counter() - started, 3)
    try:
        onx = export.to_onnx(fitted, inputs, classification, fam.name)
    except Exception as exc:  # converter gaps are reported per family, never fatal to the build
        ev.excluded = f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return ev
    ev.onnx_bytes = onx.SerializeToString()
    ev.session = _session(ev.onnx_bytes)
    test_feeds = feeds["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if classification:
            label, proba = _classifier_outputs(ev.session, test_feeds)
            tol = export.FAMILY_TOLERANCE.get(fam.name, export.PROBA_TOLERANCE)
            parity = export.check_classifier_parity(
                fitted.predict_proba(x_test), fitted.predict(x_test), proba, label, tol
            )
        else:
            (pred,) = ev.session.run(["variable"], test_feeds)
            parity = export.check_regressor_parity(fitted.predict(x_test), pred, scale)
    ev.card["parity"] = parity
    if not parity.passed:
        ev.excluded = f"parity check failed: {parity.reason}"
    ev.card["latency"] = _member_latency(ev.session, fitted, table.columns, x_test, classification)
    return ev


def _member_latency(
    session: ort.InferenceSession,
    pipeline: Pipeline,
    columns: list[ColumnSpec],
    x: pd.DataFrame,
    classification: bool,
) -> LatencyRecord:
    rows = pd.concat([x] * (latency.BATCH_ROWS // max(len(x), 1) + 1)).iloc[: latency.BATCH_ROWS]

    def ort_rows(n: int) -> Callable[[], Any]:
        f = _frame_feeds(columns, rows.iloc[:n])
        return lambda: session.run(None, f)

    single, batch = latency.single_and_batch_us(ort_rows)
    one = rows.iloc[:1]
    predict = pipeline.predict_proba if classification else pipeline.predict
    sk = latency.median_us(lambda: predict(one), latency.SKLEARN_RUNS, warmup=2)
    return LatencyRecord(
        onnx_single_row_us=single, onnx_batch_row_us=batch, sklearn_single_row_us=round(sk, 1)
    )


def _score_member(
    m: Evaluated,
    y_val: npt.NDArray[Any],
    y_test: npt.NDArray[Any],
    n_classes: int,
    task: str,
    costs: tuple[float, float] | None,
    feeds: dict[str, dict[str, npt.NDArray[Any]]],
) -> None:
    assert m.session is not None
    ys = {"validation": y_val, "test": y_test}
    if task == "regression":
        for split, y in ys.items():
            (pred,) = m.session.run(["variable"], feeds[split])
            m.outputs[split] = {"pred": np.ravel(pred).astype(np.float64), "labels": np.ravel(pred)}
            m.metrics[split] = scoring.regression_metrics(y, pred)
        return
    raw = {split: _classifier_outputs(m.session, feeds[split]) for split in ys}
    if costs is not None and m.card.get("role") != "baseline":
        m.threshold = scoring.choose_threshold(raw["validation"][1][:, 1], y_val, *costs)
    for split, y in ys.items():
        onnx_label, proba = raw[split]
        labels = combiners.apply_threshold(proba, m.threshold) if m.threshold is not None else onnx_label
        m.outputs[split] = {"labels": labels, "proba": proba.astype(np.float64), "raw_labels": onnx_label}
        m.metrics[split] = scoring.classification_metrics(y, proba, labels, n_classes, costs)


def _build_ensembles(
    pool: list[Evaluated],
    baseline: Evaluated,
    table: data_mod.Table,
    task: str,
    n_classes: int,
    x_train: pd.DataFrame,
    y_train: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
    y_test: npt.NDArray[Any],
    cv: Any,
    opts: BuildOptions,
    costs: tuple[float, float] | None,
    feeds: dict[str, dict[str, npt.NDArray[Any]]],
    extras: dict[str, Any],
    progress: Progress,
    x_test: pd.DataFrame,
) -> list[Evaluated]:
    metric = scoring.primary_metric(task)
    names = [m.name for m in pool]
    key = "pred" if task == "regression" else "raw_labels"
    errors = ens.error_matrix(task, y_val, [m.outputs["validation"][key] for m in pool])
    corr = ens.error_correlation(errors)
    extras["error_correlation"] = {"names": names, "matrix": corr.round(4).tolist()}
    if task != "regression":
        extras["disagreement"] = {
            "names": names,
            "matrix": ens.disagreement([m.outputs["validation"]["raw_labels"] for m in pool])
            .round(4)
            .tolist(),
        }
    scores = [scoring.oriented(metric, m.metrics["validation"][metric]) for m in pool]
    base_score = scoring.oriented(metric, baseline.metrics["validation"][metric])
    latencies = [m.card["latency"].onnx_single_row_us for m in pool]
    chosen_names = ens.select_members(names, scores, base_score, corr, latencies)
    chosen = [next(m for m in pool if m.name == n) for n in chosen_names]
    weights = ens.skill_weights([scores[names.index(n)] for n in chosen_names], base_score)
    progress(f"ensemble members (diversity rule): {', '.join(chosen_names)}; skill weights {weights}")
    extras["ensemble_members"] = chosen_names
    extras["ensemble_rule"] = ens.__doc__.split("\n\n")[1] if ens.__doc__ else ""

    out: list[Evaluated] = []
    if task == "regression":
        specs = [
            ("mean", "mean", None, "uniform mean of the members' predictions"),
            ("weighted", "mean", weights, "mean weighted by validation skill (R2 above the baseline)"),
        ]
    else:
        specs = [
            ("vote", "hard_vote", None, "hard majority vote; ties go to the lowest class index"),
            ("average", "soft_average", None, "uniform average of the members' probabilities"),
            (
                "weighted",
                "soft_average",
                weights,
                "probabilities averaged with weights proportional to validation accuracy above the baseline",
            ),
        ]
    ys = {"validation": y_val, "test": y_test}
    for name, strategy, w, desc in specs:
        ev = Evaluated(name=name, kind="ensemble", family=strategy, description=desc)
        ev.card.update(strategy=strategy, members=chosen_names, weights=w)
        for split, _y in ys.items():
            ev.outputs[split] = _combine(strategy, chosen, split, w, task, n_classes)
        if task == "binary" and costs is not None and strategy == "soft_average":
            ev.threshold = scoring.choose_threshold(ev.outputs["validation"]["proba"][:, 1], y_val, *costs)
        _score_combined(ev, ys, task, n_classes, costs)
        ev.card["parity"] = ParityRecord(
            rows=len(y_test), passed=True, tolerance=0.0, reason="computed from verified member outputs"
        )
        ev.card["latency"] = _ensemble_latency(
            chosen, table.columns, strategy, w, task, n_classes, None, x_test
        )
        out.append(ev)
    if task != "regression":
        accs = [m.metrics["test"]["accuracy"] for m in chosen]
        vote = out[0]
        extras["vote_independence"] = {
            "members": chosen_names,
            "member_accuracies": accs,
            "independent_accuracy": ens.independent_vote_accuracy(accs),
            "measured_accuracy": vote.metrics["test"]["accuracy"],
        }

    stack = _stack(chosen, task, n_classes, x_train, y_train, cv, opts, table, ys, costs, y_val, x_test)
    if stack is not None:
        out.append(stack)
    for ev in out:
        progress(
            f"ensemble {ev.name:<9} test {metric} {ev.metrics['test'][metric]:.4f}  "
            f"onnx {ev.card['latency'].onnx_single_row_us:7.1f}µs/row"
        )
    return out


def _combine(
    strategy: str,
    members: list[Evaluated],
    split: str,
    weights: list[float] | None,
    task: str,
    n_classes: int,
) -> dict[str, npt.NDArray[Any]]:
    if strategy == "mean":
        return {"pred": combiners.mean([m.outputs[split]["pred"] for m in members], weights)}
    if strategy == "hard_vote":
        labels, shares = combiners.hard_vote(
            [m.outputs[split]["raw_labels"] for m in members], n_classes, weights
        )
        return {"labels": labels, "proba": shares}
    labels, proba = combiners.soft_average([m.outputs[split]["proba"] for m in members], weights)
    return {"labels": labels, "proba": proba}


def _score_combined(
    ev: Evaluated,
    ys: dict[str, npt.NDArray[Any]],
    task: str,
    n_classes: int,
    costs: tuple[float, float] | None,
) -> None:
    for split, y in ys.items():
        o = ev.outputs[split]
        if task == "regression":
            o["labels"] = o["pred"]
            ev.metrics[split] = scoring.regression_metrics(y, o["pred"])
            continue
        if ev.threshold is not None:
            o["labels"] = combiners.apply_threshold(o["proba"], ev.threshold)
        ev.metrics[split] = scoring.classification_metrics(y, o["proba"], o["labels"], n_classes, costs)


def _ensemble_latency(
    members: list[Evaluated],
    columns: list[ColumnSpec],
    strategy: str,
    weights: list[float] | None,
    task: str,
    n_classes: int,
    meta: ort.InferenceSession | None,
    rows: pd.DataFrame,
) -> LatencyRecord:
    """The whole ensemble: every member run once plus the combiner, as the service does it."""
    sample = pd.concat([rows] * (latency.BATCH_ROWS // max(len(rows), 1) + 1)).iloc[: latency.BATCH_ROWS]

    def run_rows(n: int) -> Callable[[], Any]:
        f = _frame_feeds(columns, sample.iloc[:n])
        sessions = [m.session for m in members]

        def call() -> Any:
            outs = [s.run(None, f) for s in sessions if s is not None]
            if task == "regression":
                vals = [o[0] for o in outs]
                if meta is not None:
                    return meta.run(None, {"features": combiners.stack_features(vals, task)})
                return combiners.mean(vals, weights)
            if strategy == "hard_vote":
                return combiners.hard_vote([o[0] for o in outs], n_classes, weights)
            if meta is not None:
                return meta.run(None, {"features": combiners.stack_features([o[1] for o in outs], task)})
            return combiners.soft_average([o[1] for o in outs], weights)

        return call

    single, batch = latency.single_and_batch_us(run_rows)
    return LatencyRecord(onnx_single_row_us=single, onnx_batch_row_us=batch)


def _stack(
    chosen: list[Evaluated],
    task: str,
    n_classes: int,
    x_train: pd.DataFrame,
    y_train: npt.NDArray[Any],
    cv: Any,
    opts: BuildOptions,
    table: data_mod.Table,
    ys: dict[str, npt.NDArray[Any]],
    costs: tuple[float, float] | None,
    y_val: npt.NDArray[Any],
    x_test: pd.DataFrame,
) -> Evaluated | None:
    """Meta-learner on out-of-fold member outputs (as StackingClassifier), exported as its own ONNX."""
    started = time.perf_counter()
    method = "predict" if task == "regression" else "predict_proba"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oof = [
            cross_val_predict(clone(m.pipeline), x_train, y_train, cv=cv, method=method, n_jobs=opts.n_jobs)
            for m in chosen
        ]
    features = combiners.stack_features(oof, task)
    meta = ens.fit_meta(task, features, y_train, opts.seed)
    width = features.shape[1]
    from skl2onnx.common.data_types import FloatTensorType

    onx = export.to_onnx(meta, [("features", FloatTensorType([None, width]))], task != "regression", "stack")
    raw = onx.SerializeToString()
    session = _session(raw)
    ev = Evaluated(
        name="stack",
        kind="ensemble",
        family="stack",
        description=("logistic regression" if task != "regression" else "non-negative linear regression")
        + " trained on out-of-fold member outputs",
    )
    ev.onnx_bytes = raw
    ev.session = session
    key = "pred" if task == "regression" else "proba"
    split_features = {
        split: combiners.stack_features([m.outputs[split][key] for m in chosen], task) for split in ys
    }
    test_x = split_features["test"]
    if task == "regression":
        (pred,) = session.run(["variable"], {"features": test_x})
        parity = export.check_regressor_parity(meta.predict(test_x), pred, float(np.std(y_train)))
    else:
        label, proba = _classifier_outputs(session, {"features": test_x})
        parity = export.check_classifier_parity(
            meta.predict_proba(test_x), meta.predict(test_x), proba, label, export.PROBA_TOLERANCE
        )
    if not parity.passed:
        return None
    for split in ys:
        if task == "regression":
            (pred,) = session.run(["variable"], {"features": split_features[split]})
            ev.outputs[split] = {"pred": np.ravel(pred).astype(np.float64)}
        else:
            label, proba = _classifier_outputs(session, {"features": split_features[split]})
            ev.outputs[split] = {"labels": label, "proba": proba.astype(np.float64)}
    if task == "binary" and costs is not None:
        ev.threshold = scoring.choose_threshold(ev.outputs["validation"]["proba"][:, 1], y_val, *costs)
    _score_combined(ev, ys, task, n_classes, costs)
    coef = np.asarray(getattr(meta, "coef_", []), dtype=float)
    ev.card.update(
        strategy="stack",
        members=[m.name for m in chosen],
        weights=None,
        parity=parity,
        hyperparameters={
            "meta_model": type(meta).__name__,
            "coefficients": coef.round(6).tolist(),
            "intercept": np.asarray(meta.intercept_, dtype=float).round(6).tolist(),
        },
        training_seconds=round(time.perf_counter() - started, 3),
        latency=_ensemble_latency(chosen, table.columns, "stack", None, task, n_classes, session, x_test),
    )
    return ev


def _card(m: Evaluated, table: data_mod.Table, versions: dict[str, str], metric: str) -> ModelCard:
    c = m.card
    return ModelCard(
        name=m.name,
        kind="member" if m.kind == "member" else "ensemble",
        family=m.family,
        description=m.description,
        hyperparameters=c.get("hyperparameters", {}),
        search=c.get("search"),
        metrics={s: {k: round(v, 6) for k, v in d.items()} for s, d in m.metrics.items()},
        primary_metric=metric,
        latency=c.get("latency"),
        file_size_bytes=c.get("file_size_bytes", 0),
        training_seconds=c.get("training_seconds", 0.0),
        parity=c.get("parity"),
        sha256=c.get("sha256"),
        dataset=table.fingerprint,
        library_versions=versions,
        decision_threshold=m.threshold,
        learning_curve=c.get("learning_curve", []),
        still_improving=c.get("still_improving"),
        members=c.get("members", []),
        strategy=c.get("strategy"),
        weights=c.get("weights"),
    )
