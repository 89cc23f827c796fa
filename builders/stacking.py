"""Stacking: a meta-learner on the chosen members' out-of-fold outputs (as scikit-learn's
StackingClassifier / StackingRegressor do), exported as an ONNX graph of its own and parity-checked."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from skl2onnx.common.data_types import FloatTensorType

from builders import ensembles as ens
from builders import export
from builders.context import OUT_OF_FOLD, BuildContext
from builders.evaluated import Evaluated
from builders.members import decision_threshold, record_out_of_fold, session
from contract.combine import stack_features
from contract.manifest import ParityRecord
from contract.outputs import Output


def stack(chosen: list[Evaluated], ctx: BuildContext) -> Evaluated | None:
    """The stacking ensemble, or None when its export fails parity."""
    from builders.ensembling import score_combined  # the same scoring as every combiner

    started = time.perf_counter()
    # The members' out-of-fold outputs over train + validation (builders/members.py): every row's
    # features come from a fit that never saw the row, as the served members' outputs on new rows do.
    y = ctx.y_fit
    oof = [_values(m.outputs[OUT_OF_FOLD], ctx.task) for m in chosen]
    features = stack_features(oof, ctx.task)
    meta = ens.fit_meta(ctx.task, features, y, ctx.opts.seed)
    width = len(chosen) * (1 if ctx.task in ("regression", "binary") else ctx.n_classes)
    onx = export.to_onnx(meta, [("features", FloatTensorType([None, width]))], ctx.classification, "stack")
    ev = Evaluated(
        name="stack",
        kind="ensemble",
        family="stack",
        description=("logistic regression" if ctx.classification else "non-negative linear regression")
        + " trained on the members' out-of-fold outputs over train + validation",
        strategy="stack",
        members=[m.name for m in chosen],
    )
    ev.onnx_bytes = onx.SerializeToString()
    ev.session = session(ev.onnx_bytes)
    ev.parity = _parity(ev, meta, chosen, ctx)
    if not ev.parity.passed:
        return None
    if ctx.chooses_threshold:
        score_combined(ev, chosen, ctx)
        proba = ev.outputs["validation"].proba
        assert proba is not None
        ev.threshold = decision_threshold(proba[:, 1], ctx)
    score_combined(ev, chosen, ctx)
    # its own out-of-fold outputs: the meta-learner cross-validated on the members' out-of-fold
    # outputs, over the same folds (for the champion rule, beside every other model's)
    record_out_of_fold(ev, ens.meta_learner(ctx.task, ctx.opts.seed), features, ctx)
    coef = np.asarray(getattr(meta, "coef_", []), dtype=float)
    ev.hyperparameters = {
        "meta_model": type(meta).__name__,
        "coefficients": coef.round(6).tolist(),
        "intercept": np.asarray(meta.intercept_, dtype=float).round(6).tolist(),
    }
    ev.training_seconds = round(time.perf_counter() - started, 3)
    return ev


def _values(out: Output, task: str) -> Any:
    return out.values if task == "regression" else out.proba


def _parity(ev: Evaluated, meta: object, chosen: list[Evaluated], ctx: BuildContext) -> ParityRecord:
    assert ev.session is not None
    test_x = stack_features([_values(m.outputs["test"], ctx.task) for m in chosen], ctx.task)
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
