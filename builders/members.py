"""One family from search to served outputs: tune on the training split, export to ONNX, check parity
against scikit-learn on test rows, time it, and score its ONNX outputs on validation and test."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline

from builders import export, latency, scoring
from builders.anomaly import with_contamination
from builders.context import OUT_OF_FOLD, SPLITS, BuildContext, frame_feeds
from builders.evaluated import Evaluated
from builders.families import Family
from builders.preprocess import make_pipeline, search_space
from builders.search import learning_points, search
from contract.manifest import ColumnSpec, LatencyRecord
from contract.outputs import Output, from_graph

PROVIDERS = ["CPUExecutionProvider"]


def session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    """An onnxruntime session on one thread (as the service runs each graph)."""
    raw = model if isinstance(model, bytes) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(raw, sess_options=opts, providers=PROVIDERS)


def train_member(fam: Family, ctx: BuildContext, seconds: float | None = None) -> Evaluated:
    """Search, fit, export and check one family; ``excluded`` says why when it cannot be served."""
    ev = Evaluated(name=fam.name, kind="member", family=fam.name, description=fam.assumptions, role=fam.role)
    started = time.perf_counter()
    opts = ctx.opts
    pipeline = make_pipeline(fam, ctx.table.columns, opts.seed)
    if ctx.table.anomaly:
        with_contamination(pipeline, ctx.contamination)
    fitted, params, record = search(
        pipeline,
        search_space(fam, ctx.table.columns),
        ctx.x_train,
        ctx.y_train,
        task=ctx.goal,
        budget=opts.budget,
        cv=ctx.cv,
        seed=opts.seed,
        n_jobs=opts.n_jobs,
        seconds=seconds,
        strategy=opts.search,
    )
    ev.pipeline, ev.search, ev.hyperparameters = fitted, record, with_rounds(params, fitted)
    if opts.learning_curves:
        ev.learning_curve, ev.still_improving = learning_points(
            fitted, ctx.x_train, ctx.y_train, task=ctx.goal, cv=ctx.cv, n_jobs=opts.n_jobs
        )
    ev.training_seconds = round(time.perf_counter() - started, 3)
    export_checked(ev, fitted, ctx)
    return ev


def export_checked(ev: Evaluated, fitted: Pipeline, ctx: BuildContext) -> None:
    """Export ``fitted`` as ``ev``'s graph, check it against scikit-learn on the test rows and time
    it; ``ev.excluded`` says why when it cannot be served (nothing else is set then)."""
    try:
        onx = export.to_onnx(fitted, ctx.inputs, ctx.classification, ev.family)
    except Exception as exc:  # converter gaps are reported per family, never fatal to the build
        ev.excluded = f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return
    ev.onnx_bytes = onx.SerializeToString()
    ev.session = session(ev.onnx_bytes)
    ev.parity = _parity(ev.session, fitted, ev.family, ctx)
    if not ev.parity.passed:
        ev.excluded = f"parity check failed: {ev.parity.reason}"
    ev.latency = member_latency(ev.session, fitted, ctx.table.columns, ctx.x_test, ctx.classification)


ROUNDS = "rounds (early stopping)"


def with_rounds(params: dict[str, Any], pipeline: Pipeline) -> dict[str, Any]:
    """The card's hyperparameters with the rounds early stopping chose for the served fit (boosting)."""
    rounds = getattr(pipeline.steps[-1][1], "rounds_", None)
    return {**params, ROUNDS: int(rounds)} if rounds is not None else params


def _parity(session: ort.InferenceSession, fitted: Pipeline, family: str, ctx: BuildContext) -> Any:
    feeds = ctx.feeds["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if ctx.classification:
            label, proba = session.run(["label", "probabilities"], feeds)
            tol = export.FAMILY_TOLERANCE.get(family, export.PROBA_TOLERANCE)
            ties = export.neighbour_tie_answers(fitted, ctx.x_test, np.asarray(proba), True)
            return export.check_classifier_parity(
                fitted.predict_proba(ctx.x_test),
                fitted.predict(ctx.x_test),
                np.asarray(proba),
                label,
                tol,
                ties,
            )
        (pred,) = session.run(["variable"], feeds)
        ties = export.neighbour_tie_answers(fitted, ctx.x_test, np.asarray(pred), False)
        return export.check_regressor_parity(fitted.predict(ctx.x_test), pred, ctx.target_scale, ties)


def member_latency(
    session: ort.InferenceSession,
    pipeline: Pipeline,
    columns: list[ColumnSpec],
    x: pd.DataFrame,
    classification: bool,
) -> LatencyRecord:
    """Single-row and per-row-of-a-batch cost in onnxruntime, and scikit-learn's single row."""
    rows = pd.concat([x] * (latency.BATCH_ROWS // max(len(x), 1) + 1)).iloc[: latency.BATCH_ROWS]

    def ort_rows(n: int) -> Callable[[], Any]:
        f = frame_feeds(columns, rows.iloc[:n])
        return lambda: session.run(None, f)

    single, batch = latency.single_and_batch_us(ort_rows)
    one = rows.iloc[:1]
    predict = pipeline.predict_proba if classification else pipeline.predict
    sk = latency.median_us(lambda: predict(one), latency.SKLEARN_RUNS, warmup=2)
    return LatencyRecord(
        onnx_single_row_us=single, onnx_batch_row_us=batch, sklearn_single_row_us=round(sk, 1)
    )


def score_member(m: Evaluated, ctx: BuildContext) -> None:
    """Served outputs and metrics on validation and test; a binary decision threshold from FP/FN costs
    chosen on validation rows only (test metrics then show what it buys)."""
    assert m.session is not None
    raw = {split: m.session.run(None, ctx.feeds[split]) for split in SPLITS}
    if m.role != "baseline" and ctx.chooses_threshold:
        p1 = from_graph(raw["validation"], ctx.task).proba
        assert p1 is not None
        m.threshold = decision_threshold(p1[:, 1], ctx)
    for split, y in ctx.ys.items():
        m.outputs[split] = out = from_graph(raw[split], ctx.task, m.threshold)
        m.metrics[split] = metrics_of(out, y, ctx)


def decision_threshold(p1_validation: npt.NDArray[Any], ctx: BuildContext) -> float | None:
    """A binary model's threshold on P(class 1), chosen on validation rows: the cheapest under FP/FN
    costs; for detectors without costs, the one flagging the expected contamination share of them
    (members' ranks and ensembles' averages of ranks alike); otherwise none (argmax)."""
    if ctx.costs is not None:
        return scoring.choose_threshold(p1_validation, ctx.y_val, *ctx.costs)
    if ctx.table.anomaly:
        return scoring.contamination_threshold(p1_validation, ctx.contamination)
    return None


def refit_member(m: Evaluated, ctx: BuildContext) -> bool:
    """The chosen configuration refit on train + validation (every labelled row but the test split),
    exported and checked again; it then serves, and its test outputs and metrics replace the
    train-only model's. Validation outputs, metrics, the decision threshold and everything chosen
    from them stay those of the train-only fit: they are the held-out evidence the choices rest on.
    When the refit cannot be exported or fails parity, the train-only model serves (False)."""
    assert m.pipeline is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = clone(m.pipeline).fit(ctx.x_fit, ctx.y_fit)
    try:
        onx = export.to_onnx(fitted, ctx.inputs, ctx.classification, m.name)
    except Exception:  # the train-only model exported: keep it
        return False
    raw = onx.SerializeToString()
    sess = session(raw)
    parity = _parity(sess, fitted, m.family, ctx)
    if not parity.passed:
        return False
    m.hyperparameters = with_rounds(m.hyperparameters, fitted)
    m.pipeline, m.onnx_bytes, m.session, m.parity, m.trained_on = (
        fitted,
        raw,
        sess,
        parity,
        "train+validation",
    )
    m.outputs["test"] = out = from_graph(sess.run(None, ctx.feeds["test"]), ctx.task, m.threshold)
    m.metrics["test"] = metrics_of(out, ctx.y_test, ctx)
    return True


def out_of_fold(m: Evaluated, ctx: BuildContext) -> None:
    """The chosen configuration's out-of-fold outputs over train + validation (the CV's folds, so
    every family sees the same ones; each row predicted by a fit that never saw it), with the member's
    decision threshold: what the champion rule and the stacking meta-model judge, on four times the
    rows one validation split has. From scikit-learn, which parity ties to the served graph."""
    assert m.pipeline is not None
    record_out_of_fold(m, m.pipeline, ctx.x_fit, ctx)


def record_out_of_fold(ev: Evaluated, estimator: Any, x: Any, ctx: BuildContext) -> None:
    """``estimator`` (a configuration, cloned) cross-validated on ``x`` (train + validation rows, or
    features of them) over the CV's folds: ``ev``'s out-of-fold outputs and metrics."""
    method = "predict" if ctx.task == "regression" else "predict_proba"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pred = cross_val_predict(
            clone(estimator), x, ctx.y_fit, cv=ctx.cv, method=method, n_jobs=ctx.opts.n_jobs
        )
    ev.outputs[OUT_OF_FOLD] = out = oof_output(np.asarray(pred), ctx.task, ev.threshold)
    ev.metrics[OUT_OF_FOLD] = metrics_of(out, ctx.y_fit, ctx)


def oof_output(pred: npt.NDArray[Any], task: str, threshold: float | None) -> Output:
    """An Output from scikit-learn's predictions, shaped as :func:`contract.outputs.from_graph` shapes
    a graph's (the argmax as the raw label, the decision threshold applied to the served one)."""
    if task == "regression":
        return from_graph([pred], task)
    return from_graph([np.argmax(pred, axis=1), pred], task, threshold)


def metrics_of(out: Output, y: Any, ctx: BuildContext) -> dict[str, float]:
    """The split's metrics from served outputs."""
    if ctx.task == "regression":
        assert out.values is not None
        return scoring.regression_metrics(y, out.values)
    assert out.proba is not None and out.labels is not None
    metrics = scoring.classification_metrics(y, out.proba, out.labels, ctx.n_classes, ctx.costs)
    if ctx.table.anomaly:
        metrics.update(scoring.detection_metrics(y, out.proba[:, 1], out.labels))
    return metrics
