"""FLAML on one split, in the benchmark's own environment: fits on train.csv for a wall time, writes
its test predictions (class probabilities with the class names, or values) as JSON.

    python quality_flaml.py TABLE_DIR SECONDS OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from flaml import AutoML


def main(folder: Path, seconds: float, out: Path) -> None:
    meta = json.loads((folder / "table.json").read_text())
    target, task = meta["target"], meta["task"]
    train = pd.read_csv(folder / "train.csv")
    test = pd.read_csv(folder / "test.csv")
    x, y = train.drop(columns=[target]), train[target]
    for frame in (x, test):  # strings as categories, as FLAML expects them
        for col in frame.columns:
            if frame[col].dtype == object:
                frame[col] = frame[col].astype("category")
    if task != "regression":
        y = y.astype(str)
    automl = AutoML()
    started = time.perf_counter()
    automl.fit(
        x,
        y,
        task="regression" if task == "regression" else "classification",
        time_budget=seconds,
        n_jobs=2,
        seed=0,
        verbose=0,
    )
    spent = time.perf_counter() - started
    xt = test.drop(columns=[target])
    result: dict[str, object] = {"seconds": spent, "best_estimator": automl.best_estimator}
    if task == "regression":
        result["values"] = np.asarray(automl.predict(xt), dtype=float).tolist()
    else:
        result["classes"] = [str(c) for c in automl.classes_]
        result["proba"] = np.asarray(automl.predict_proba(xt), dtype=float).tolist()
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]))
