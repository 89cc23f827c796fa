"""In-process single-row latency of every member, onnxruntime vs scikit-learn, and the peers' inputs.

Runs in the project venv, in its own process and before any server starts (a quiet machine):

1. reloads the repository's dataset and split (the card's seed), refits each member's scikit-learn
   pipeline with builders (same family, preprocessing and the card's hyper-parameters) and checks the
   refit against the card (test accuracy) and against the member's ONNX graph (probabilities);
2. times one-row predictions: the repository's ONNX file in onnxruntime (feeds built as the gateway
   builds them) and the refit pipeline's predict_proba on a one-row DataFrame (as mlserver-sklearn
   calls it);
3. writes the best member's refit pipeline as a joblib file (for MLServer + mlserver-sklearn) and 64
   held-out test records (the request bodies of every server).

    python benchmarks/inproc.py --repository VERSION_DIR --best NAME --joblib model.joblib \
        --records records.json --out inproc.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ORT_SECONDS = 1.0
SKLEARN_SECONDS = 1.5


def median_us(fn: Any, budget_s: float, min_runs: int, max_runs: int) -> tuple[float, int]:
    """Median wall time (µs) of ``fn`` over as many runs as fit in ``budget_s`` (bounded), after 3
    warm-up calls."""
    for _ in range(3):
        fn()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="a repository version folder")
    parser.add_argument("--best", required=True, help="the member to export as joblib")
    parser.add_argument("--joblib", type=Path, required=True)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import joblib
    import onnxruntime as ort
    from sklearn.exceptions import ConvergenceWarning

    from builders import data as data_mod
    from builders.build import split_table
    from builders.families import families_for
    from builders.preprocess import make_pipeline
    from contract.feeds import make_feeds
    from contract.verify import load_card, verify

    manifest = verify(args.repository)
    source = manifest.dataset.source if hasattr(manifest, "dataset") else ""
    if not source.startswith("sklearn:"):
        raise SystemExit(f"inproc: only bundled datasets can be reloaded here, got {source!r}")
    frame, _ = data_mod.load_bundled(source.removeprefix("sklearn:"))
    table = data_mod.prepare(
        frame, manifest.target, manifest.task, manifest.name, source, data_mod.frame_digest(frame)
    )
    families = {f.name: f for f in families_for(table.task, None)}
    results: list[dict[str, Any]] = []
    one_row_records: list[dict[str, Any]] = []
    for member in manifest.members:
        card = load_card(args.repository / member.card)
        seed = card.search.seed if card.search is not None else 0
        x_train, _x_val, x_test, y_train, _y_val, y_test = split_table(table, seed)
        if not one_row_records:
            one_row_records = [
                {c.name: (None if v != v else float(v)) for c, v in zip(table.columns, row, strict=True)}
                for row in x_test[[c.tensor for c in table.columns]].head(64).itertuples(index=False)
            ]
        pipeline = make_pipeline(families[member.family], table.columns, seed)
        params = {
            f"model__{k}": tuple(v) if isinstance(v, list) else v for k, v in card.hyperparameters.items()
        }
        pipeline.set_params(**params)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(x_train, y_train)
        fit_s = time.perf_counter() - started
        acc = float(np.mean(pipeline.predict(x_test) == y_test))
        card_acc = card.metrics.get("test", {}).get("accuracy")

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(args.repository / member.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        test_feeds = make_feeds(table.columns, {c.name: x_test[c.tensor].tolist() for c in table.columns})
        _, onnx_proba = session.run(None, test_feeds)
        max_diff = float(np.max(np.abs(np.asarray(onnx_proba) - pipeline.predict_proba(x_test))))

        one = x_test.iloc[:1]
        feeds = make_feeds(table.columns, {c.name: one[c.tensor].tolist() for c in table.columns})
        onnx_us, onnx_runs = median_us(lambda s=session, f=feeds: s.run(None, f), ORT_SECONDS, 200, 20_000)
        sk_us, sk_runs = median_us(lambda p=pipeline, o=one: p.predict_proba(o), SKLEARN_SECONDS, 10, 300)
        latency = card.latency
        results.append(
            {
                "member": member.name,
                "family": member.family,
                "test_accuracy": round(card_acc, 4) if card_acc is not None else None,
                "refit_test_accuracy": round(acc, 4),
                "refit_matches_card": card_acc is not None and abs(acc - card_acc) < 1e-6,
                "onnx_vs_refit_max_abs_proba_diff": max_diff,
                "fit_seconds": round(fit_s, 3),
                "onnx_us": round(onnx_us, 1),
                "onnx_runs": onnx_runs,
                "sklearn_us": round(sk_us, 1),
                "sklearn_runs": sk_runs,
                "card_onnx_us": latency.onnx_single_row_us if latency else None,
                "card_sklearn_us": latency.sklearn_single_row_us if latency else None,
            }
        )
        if member.name == args.best:
            args.joblib.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(pipeline, args.joblib)
        print(
            f"  {member.name:14s} ORT {onnx_us:8.1f} µs  sklearn {sk_us:9.1f} µs  "
            f"refit acc {acc:.4f} (card {card_acc})  max |ΔP| vs ONNX {max_diff:.1e}",
            flush=True,
        )
    args.records.write_text(json.dumps(one_row_records))
    args.out.write_text(
        json.dumps(
            {
                "members": results,
                "note": (
                    "Measured here in one process before any server started: each member's ONNX file from "
                    "the repository in onnxruntime (1 intra-op thread, feeds built as the gateway builds "
                    "them) vs its scikit-learn pipeline refit with builders (the card's family, "
                    "preprocessing, hyper-parameters and seed; 'refit = card' says the refit reproduces "
                    "the card's test accuracy) calling predict_proba on a one-row DataFrame. Medians. "
                    "The card columns are the builder's own measurements at build time."
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
