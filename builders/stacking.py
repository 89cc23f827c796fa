"""Stacking: a meta-learner on the chosen members' out-of-fold outputs (as scikit-learn's
StackingClassifier / StackingRegressor do), exported as an ONNX graph of its own and parity-checked."""

from __future__ import annotations

import time
import warnings

import numpy as np
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_predict

from builders import ensembles as ens
from builders import export, scoring
from builders.context import BuildContext
from builders.evaluated import Evaluated
from builders.members import session
from contract.combine import stack_features
from contract.manifest import ParityRecord


def stack(chosen: list[Evaluated], ctx: BuildContext) -> Evaluated | None:
    """The stacking ensemble, or None when its export fails parity."""
    from builders.ensembling import score_combined  # the same scoring as every combiner

    started = time.perf_counter()
    method = "predict" if ctx.task == "regression" else "predict_proba"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oof = [
            cross_val_predict(
                clone(m.pipeline), ctx.x_train, ctx.y_train, cv=ctx.cv, method=method, n_jobs=ctx.opts.n_jobs
            )
            for m in chosen
        ]
    meta = ens.fit_meta(ctx.task, stack_features(oof, ctx.task), ctx.y_train, ctx.opts.seed)
    width = len(chosen) * (1 if ctx.task in ("regression", "binary") else ctx.n_classes)
    onx = export.to_onnx(meta, [("features", FloatTensorType([None, width]))], ctx.classification, "stack")
    ev = Evaluated(
        name="stack",
        kind="ensemble",
        family="stack",
        description=("logistic regression" if ctx.classification else "non-negative linear regression")
        + " trained on out-of-fold member outputs",
        strategy="stack",
        members=[m.name for m in chosen],
    )
    ev.onnx_bytes = onx.SerializeToString()
    ev.session = session(ev.onnx_bytes)
    ev.parity = _parity(ev, meta, chosen, ctx)
    if not ev.parity.passed:
        return None
    if ctx.costs is not None:
        score_combined(ev, chosen, ctx)
        proba = ev.outputs["validation"].proba
        assert proba is not None
        ev.threshold = scoring.choose_threshold(proba[:, 1], ctx.y_val, *ctx.costs)
    score_combined(ev, chosen, ctx)
    coef = np.asarray(getattr(meta, "coef_", []), dtype=float)
    ev.hyperparameters = {
        "meta_model": type(meta).__name__,
        "coefficients": coef.round(6).tolist(),
        "intercept": np.asarray(meta.intercept_, dtype=float).round(6).tolist(),
    }
    ev.training_seconds = round(time.perf_counter() - started, 3)
    return ev


def _parity(ev: Evaluated, meta: object, chosen: list[Evaluated], ctx: BuildContext) -> ParityRecord:
    assert ev.session is not None
    outs = [m.outputs["test"] for m in chosen]
    test_x = stack_features([o.values if ctx.task == "regression" else o.proba for o in outs], ctx.task)
    if ctx.task == "regression":
        (pred,) = ev.session.run(["variable"], {"features": test_x})
        return export.check_regressor_parity(meta.predict(test_x), pred, ctx.target_scale)  # type: ignore[attr-defined]
    label, proba = ev.session.run(["label", "probabilities"], {"features": test_x})
    return export.check_classifier_parity(
        meta.predict_proba(test_x),  # type: ignore[attr-defined]
        meta.predict(test_x),  # type: ignore[attr-defined]
        np.asarray(proba),
        label,
        export.PROBA_TOLERANCE,
    )
