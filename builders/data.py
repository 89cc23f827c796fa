"""Reading a table, profiling its columns and deciding the task.

Every failure here is a BuildError naming the file or column and what was expected.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from builders.errors import BuildError
from contract.manifest import NUMERIC_INPUT, ColumnSpec, DatasetFingerprint, DroppedColumn, Task

SKLEARN_DATASETS = ("breast_cancer", "wine", "digits", "iris", "diabetes")
BUNDLED_DATASETS = (*SKLEARN_DATASETS, "fortunes", "wbc_outliers")
DEFAULT_TASKS = {"wbc_outliers": "anomaly"}
"""Bundled datasets built for a task that ``--task auto`` would not pick."""
WBC_MALIGNANT = 21
"""wbc_outliers: every benign tumour of breast_cancer and this many malignant ones (5.6%), the
outlier-detection benchmark shape (ODDS' "WBC": 357 benign, 21 malignant)."""
FORTUNES_DIR = Path("/usr/share/games/fortunes")
"""Debian's ``fortunes`` package: short texts (quips, quotations, jokes) filed by topic, one file each."""
FORTUNE_TOPICS = ("computers", "food", "law", "medicine", "politics", "sports")
"""Topics with distinct vocabularies and 74-1,050 texts each; at most FORTUNES_PER_TOPIC of each."""
FORTUNES_PER_TOPIC = 150
TEXT_MIN_WORDS = 3
"""A string column is free text when its median value has at least this many words (and too many
distinct values to be categories); ``--text`` names such columns explicitly."""
MAX_CATEGORIES = 100
"""String columns with more distinct values are dropped: one-hot over them would dwarf the data."""
MIN_ROWS = 40
MIN_CLASS_ROWS = 8
"""A class needs this many rows to appear in the train, validation and test splits and in every CV fold."""
MAX_CLASSES = 50


@dataclass
class Table:
    """A cleaned table ready for training: features, encoded target and the schema to serve."""

    name: str
    features: pd.DataFrame
    """Columns renamed to their ONNX tensor names; categoricals as str with "" for missing."""
    y: npt.NDArray[Any]
    """Class indices (int64) for classification, float64 for regression."""
    task: Task
    classes: list[Any]
    columns: list[ColumnSpec]
    dropped: list[DroppedColumn]
    fingerprint: DatasetFingerprint
    notes: list[str] = field(default_factory=list)
    anomaly: bool = False
    """``--task anomaly``: a binary table whose class 1 (the rarer label) is the anomaly; detectors
    train on the features alone and the labels judge them (builders/anomaly.py)."""
    labelled: bool = True
    """False for ``--task anomaly`` without a target: ``y`` is all 0 (nothing is known), the classes
    are UNLABELLED_CLASSES, and nothing is judged offline (builders/unlabelled.py)."""

    @property
    def goal(self) -> str:
        """What the models are judged as: the task, or "anomaly" (a binary task of detectors)."""
        return "anomaly" if self.anomaly else self.task


def load_fortunes(directory: Path = FORTUNES_DIR) -> pd.DataFrame:
    """A text-classification table from Debian's fortunes package: ``text`` (one fortune, attribution
    included) and ``topic`` (the file it is filed in); a seeded sample of FORTUNES_PER_TOPIC a topic."""
    rows: list[dict[str, str]] = []
    for topic in FORTUNE_TOPICS:
        path = directory / topic
        if not path.is_file():
            raise BuildError(
                f"--dataset fortunes: {path}: no such file; install Debian's fortunes package "
                "(apt-get install fortunes)"
            )
        entries = [e.strip() for e in path.read_text(encoding="utf-8", errors="replace").split("\n%\n")]
        texts = [" ".join(e.split()) for e in entries if e.strip("% \n")]
        # the files are roughly alphabetical: a seeded sample, not the first ones
        keep = np.sort(np.random.default_rng(0).permutation(len(texts))[:FORTUNES_PER_TOPIC])
        rows += [{"text": texts[i], "topic": topic} for i in keep]
    return pd.DataFrame(rows)


def dataset_source(name: str) -> str:
    """Where a bundled dataset comes from, as the card's fingerprint says."""
    if name == "fortunes":
        return f"debian:fortunes:{','.join(FORTUNE_TOPICS)}"
    if name == "wbc_outliers":
        return f"sklearn:breast_cancer:benign+{WBC_MALIGNANT}malignant"
    return f"sklearn:{name}"


def load_wbc_outliers() -> pd.DataFrame:
    """An anomaly table from scikit-learn's breast_cancer: all 357 benign rows and a seeded sample of
    WBC_MALIGNANT malignant ones, target ``diagnosis``."""
    frame, _ = load_bundled("breast_cancer")
    malignant = frame.index[frame["target"] == "malignant"]
    keep = np.random.default_rng(0).permutation(malignant)[:WBC_MALIGNANT]
    out = frame[(frame["target"] == "benign") | frame.index.isin(keep)].reset_index(drop=True)
    return out.rename(columns={"target": "diagnosis"})


def load_bundled(name: str) -> tuple[pd.DataFrame, str]:
    """A dataset that ships inside scikit-learn or a Debian package (nothing is downloaded), with its
    target column name."""
    from sklearn import datasets

    if name == "fortunes":
        return load_fortunes(), "topic"
    if name == "wbc_outliers":
        return load_wbc_outliers(), "diagnosis"
    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "diabetes": datasets.load_diabetes,
    }
    if name not in loaders:
        raise BuildError(
            f"--dataset: unknown dataset {name!r}; expected one of {', '.join(BUNDLED_DATASETS)}"
        )
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    if name != "diabetes":
        # Readable class labels ("malignant", "benign") instead of bare indices.
        names = list(bunch.target_names)
        frame["target"] = [str(names[int(i)]) for i in frame["target"]]
    return frame, "target"


def read_table(path: Path) -> tuple[pd.DataFrame, str]:
    """Read CSV or Parquet; returns the frame and the sha256 of the file's bytes."""
    if not path.is_file():
        raise BuildError(f"--data: {path}: no such file")
    raw = path.read_bytes()
    if not raw.strip():
        raise BuildError(f"--data: {path}: the file is empty")
    digest = hashlib.sha256(raw).hexdigest()
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(io.BytesIO(raw))
        elif suffix in (".csv", ".txt", ".tsv", ""):
            frame = pd.read_csv(io.BytesIO(raw), sep=None if suffix == ".tsv" else ",", engine="python")
        else:
            raise BuildError(f"--data: {path}: expected a .csv or .parquet file, got {suffix!r}")
    except BuildError:
        raise
    except Exception as exc:  # pandas raises many types; the user needs the file and the reason
        raise BuildError(f"--data: {path}: cannot read as {suffix or 'csv'}: {exc}".splitlines()[0]) from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise BuildError(f"--data: {path}: no rows or no columns")
    return frame, digest


def frame_digest(frame: pd.DataFrame) -> str:
    """A stable fingerprint of an in-memory table (used for bundled datasets)."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def tensor_names(columns: list[str]) -> dict[str, str]:
    """ONNX-safe, unique input names for raw column names ("mean radius" -> "mean_radius")."""
    out: dict[str, str] = {}
    used: set[str] = {NUMERIC_INPUT}  # the graphs' numeric input: no column may take its name
    for col in columns:
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(col)).strip("_") or "col"
        if not re.match(r"[A-Za-z_]", base):
            base = f"c_{base}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        out[col] = name
    return out


def _drop_reason(series: pd.Series, n_rows: int) -> str | None:
    non_null = series.dropna()
    if non_null.empty:
        return "every value is missing"
    if non_null.nunique() <= 1:
        return "constant (one distinct value)"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime columns are not supported; derive numeric features first"
    name = str(series.name).strip().lower()
    unique = non_null.nunique() == len(non_null) == n_rows
    if pd.api.types.is_integer_dtype(series) and unique:
        values = np.sort(non_null.to_numpy())
        if values[-1] - values[0] == n_rows - 1:
            return "index column (unique consecutive integers)"
    if unique and (name in {"id", "index", "uuid", "key"} or name.startswith("unnamed")):
        return "identifier (every value unique)"
    if not pd.api.types.is_numeric_dtype(series):
        if unique and n_rows > 20:
            return "identifier-like text (every value unique)"
        if non_null.nunique() > MAX_CATEGORIES:
            return f"high-cardinality text ({non_null.nunique()} distinct values > {MAX_CATEGORIES})"
    return None


def _words(series: pd.Series) -> float:
    """The median number of whitespace-separated words of a column's present values."""
    present = series.dropna().astype(str)
    return float(present.str.split().str.len().median()) if len(present) else 0.0


def _is_text(series: pd.Series, n_rows: int) -> bool:
    """Free text: strings of several words, too varied to be categories."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        return False
    distinct = series.dropna().nunique()
    return distinct > min(MAX_CATEGORIES, n_rows // 2) and _words(series) >= TEXT_MIN_WORDS


def _check_text(series: pd.Series, column: str) -> None:
    """A column named by --text must hold text."""
    if pd.api.types.is_numeric_dtype(series):  # booleans included
        raise BuildError(f"--text {column!r}: expected a column of text, got {series.dtype} values")
    present = series.dropna().astype(str).str.strip()
    if not (present != "").any():
        raise BuildError(f"--text {column!r}: expected text, but every value is missing or blank")


def _decide_task(target: pd.Series, requested: str, column: str) -> Task:
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    n_classes = target.nunique()
    if requested == "anomaly":
        if n_classes != 2:
            raise BuildError(
                f"--task anomaly: expected 2 labels in {column!r} (normal and anomaly), got {n_classes}"
            )
        return "binary"
    if requested == "regression":
        if not numeric:
            raise BuildError(
                f"--target {column!r}: expected a numeric target for regression, got text values "
                f"such as {target.iloc[0]!r}"
            )
        return "regression"
    if requested == "auto":
        integral = False
        if numeric:
            values = target.to_numpy(dtype=float)
            # Infinite targets are refused later with a clear message; np.mod would warn about them first.
            integral = bool(np.isfinite(values).all() and np.all(np.mod(values, 1) == 0))
        if numeric and not (integral and n_classes <= 20):
            return "regression"
    if n_classes < 2:
        raise BuildError(f"--target {column!r}: expected at least 2 classes, got 1 ({target.iloc[0]!r})")
    if n_classes > MAX_CLASSES:
        raise BuildError(f"--target {column!r}: expected at most {MAX_CLASSES} classes, got {n_classes}")
    if requested == "binary" and n_classes != 2:
        raise BuildError(f"--task binary: expected 2 classes in {column!r}, got {n_classes}")
    if requested == "multiclass" and n_classes < 3:
        raise BuildError(f"--task multiclass: expected 3 or more classes in {column!r}, got {n_classes}")
    return "binary" if n_classes == 2 else "multiclass"


def _class_label(value: Any) -> Any:
    """Class labels as plain JSON values (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _encode_target(
    y_raw: pd.Series, task: Task, target: str, anomaly: bool = False, anomaly_class: str | None = None
) -> tuple[npt.NDArray[Any], list[Any]]:
    """(targets, classes): float64 values for regression; class indices into the sorted class labels
    otherwise (anomaly: the normal label, then the anomaly: ``anomaly_class``, or the rarer one), each
    with at least MIN_CLASS_ROWS rows."""
    if task == "regression":
        y = y_raw.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise BuildError(f"--target {target!r}: expected finite numbers, found infinity")
        return y, []
    labels = y_raw.astype(str) if not pd.api.types.is_numeric_dtype(y_raw) else y_raw
    uniques = sorted(pd.unique(labels).tolist())
    counts = labels.value_counts()
    rare = counts[counts < MIN_CLASS_ROWS]
    if len(rare):
        raise BuildError(
            f"--target {target!r}: expected at least {MIN_CLASS_ROWS} rows per class, got "
            + ", ".join(f"{k!r}: {v}" for k, v in rare.items())
        )
    if anomaly and anomaly_class is not None:
        named = [v for v in uniques if str(v) == anomaly_class]
        if not named:
            raise BuildError(
                f"--anomaly-class {anomaly_class!r}: not a label of {target!r}; labels are "
                + ", ".join(map(repr, uniques))
            )
        # class 1 is the anomaly (P(class 1) is then the anomaly score everywhere)
        uniques = [v for v in uniques if v != named[0]] + named
    elif anomaly:
        # class 1 is the anomaly: the rarer label (P(class 1) is then the anomaly score everywhere)
        if counts.iloc[0] == counts.iloc[-1]:
            raise BuildError(
                f"--task anomaly: {target!r} has as many rows of {counts.index[0]!r} as of "
                f"{counts.index[-1]!r}; expected the anomalies to be the rarer label, or --anomaly-class"
            )
        uniques = sorted(uniques, key=lambda v: -int(counts[v]))
    index = {v: i for i, v in enumerate(uniques)}
    return labels.map(index).to_numpy(dtype=np.int64), [_class_label(v) for v in uniques]


def _type_columns(
    features: pd.DataFrame, keep: list[str], texts: set[str]
) -> tuple[list[ColumnSpec], dict[str, pd.Series]]:
    """The schema of the kept columns and their training values (float32 numbers; strings with ""
    for missing); ``texts`` are the free-text ones."""
    names = tensor_names(keep)
    columns: list[ColumnSpec] = []
    typed: dict[str, pd.Series] = {}
    for col in keep:
        series = features[col]
        missing = int(series.isna().sum())
        if pd.api.types.is_numeric_dtype(series):
            values = series.astype("float64")
            if np.isinf(values.to_numpy()).any():
                raise BuildError(f"--data: column {col!r}: expected finite numbers, found infinity")
            typed[names[col]] = values.astype("float32")
            columns.append(
                ColumnSpec(name=str(col), tensor=names[col], kind="numeric", missing_in_training=missing)
            )
        else:
            text = series.map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v))
            typed[names[col]] = text.astype(object)
            if col in texts:
                columns.append(
                    ColumnSpec(name=str(col), tensor=names[col], kind="text", missing_in_training=missing)
                )
                continue
            cats = sorted(c for c in text.unique().tolist() if c != "")
            columns.append(
                ColumnSpec(
                    name=str(col),
                    tensor=names[col],
                    kind="categorical",
                    categories=cats,
                    missing_in_training=missing,
                )
            )
    return columns, typed


UNLABELLED_CLASSES = ["normal", "anomaly"]
"""The classes of a detector built without labels: what clients' feedback labels later say."""


def prepare(
    frame: pd.DataFrame,
    target: str | None,
    task: str,
    name: str,
    source: str,
    digest: str,
    text: Sequence[str] = (),
    anomaly_class: str | None = None,
) -> Table:
    """Validate the target, drop useless columns, type the rest and encode the target. String columns
    of free text (``text`` names them, or builders find them: several words, many distinct values)
    are kept as text."""
    cols = ", ".join(map(str, frame.columns[:20]))
    if anomaly_class is not None and (task != "anomaly" or target is None):
        raise BuildError("--anomaly-class: only with --task anomaly and a --target")
    labelled = target is not None
    if target is None:
        if task != "anomaly":
            raise BuildError("--target: required (only --task anomaly can build without labels)")
    elif target not in frame.columns:
        raise BuildError(f"--target: column {target!r} not found; columns are: {cols}")
    for col in text:
        if col not in frame.columns:
            raise BuildError(f"--text: column {col!r} not found; columns are: {cols}")
        if col == target:
            raise BuildError(f"--text {col!r}: that is the target column")
    notes: list[str] = []
    if target is not None:
        missing_target = int(frame[target].isna().sum())
        if missing_target:
            frame = frame[frame[target].notna()].reset_index(drop=True)
            notes.append(f"dropped {missing_target} rows with a missing target")
    if len(frame) < MIN_ROWS:
        raise BuildError(
            f"--data: expected at least {MIN_ROWS} labelled rows for the splits, got {len(frame)}"
        )
    chosen: Task = "binary"
    if target is not None:
        chosen = _decide_task(frame[target], task, target)
        y, classes = _encode_target(
            frame[target], chosen, target, anomaly=task == "anomaly", anomaly_class=anomaly_class
        )
        features = frame.drop(columns=[target])
    else:  # nothing is known: every row counts as normal until labels arrive online
        y, classes, features = np.zeros(len(frame), dtype=np.int64), list(UNLABELLED_CLASSES), frame
    for col in text:
        _check_text(features[col], col)
    texts = {c for c in features.columns if c in text or _is_text(features[c], len(features))}
    dropped: list[DroppedColumn] = []
    keep: list[str] = []
    for col in features.columns:
        reason = None if col in texts else _drop_reason(features[col], len(features))
        if reason:
            dropped.append(DroppedColumn(name=str(col), reason=reason))
        else:
            keep.append(col)
    if not keep:
        raise BuildError(f"--data: no usable feature columns (dropped: {', '.join(d.name for d in dropped)})")
    if task == "anomaly" and texts:
        raise BuildError(
            f"--task anomaly: text columns are not supported ({', '.join(sorted(map(str, texts)))}); "
            "drop them or derive numeric features"
        )
    columns, typed = _type_columns(features, keep, texts)
    # Numeric columns first: the graphs take them as the columns of one input, string ones after it
    # (builders.preprocess selects them by position).
    columns = [c for kind in ("numeric", "categorical", "text") for c in columns if c.kind == kind]
    clean = pd.DataFrame({c.tensor: typed[c.tensor] for c in columns})
    fingerprint = DatasetFingerprint(
        source=source,
        sha256=digest,
        rows=len(frame),
        columns=frame.shape[1],
        target=target or "",
    )
    return Table(
        name=name,
        features=clean,
        y=y,
        task=chosen,
        classes=classes,
        columns=columns,
        dropped=dropped,
        fingerprint=fingerprint,
        notes=notes,
        anomaly=task == "anomaly",
        labelled=labelled,
    )
