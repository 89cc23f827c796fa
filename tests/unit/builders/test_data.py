"""Reading tables, profiling columns, deciding the task, and the message for each kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from builders.data import (
    MAX_CATEGORIES,
    MIN_CLASS_ROWS,
    MIN_ROWS,
    Table,
    frame_digest,
    load_bundled,
    prepare,
    read_table,
    tensor_names,
)
from builders.errors import BuildError
from tests.helpers import mixed_frame, sha

DIGEST = "0" * 64


def _prepare(frame: pd.DataFrame, target: str = "y", task: str = "auto") -> Table:
    return prepare(frame, target, task, "t", "tests", DIGEST)


def _with_target(values: Any, n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "y": values})


def test_useless_columns_are_dropped_with_their_reasons() -> None:
    n = 200
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "row": np.arange(100, 100 + n),
            "Unnamed: 0": rng.permutation(n) * 3,
            "constant": 7.0,
            "empty": [None] * n,
            "email": [f"user{i}@example.org" for i in range(n)],
            "city": [f"city{i % 150}" for i in range(n)],
            "when": pd.date_range("2024-01-01", periods=n, freq="h"),
            "x": rng.normal(size=n),
            "colour": rng.choice(["red", "blue"], size=n),
            "y": rng.choice(["a", "b"], size=n),
        }
    )

    table = _prepare(frame)

    reasons = {d.name: d.reason for d in table.dropped}
    assert reasons == {
        "row": "index column (unique consecutive integers)",
        "Unnamed: 0": "identifier (every value unique)",
        "constant": "constant (one distinct value)",
        "empty": "every value is missing",
        "email": "identifier-like text (every value unique)",
        "city": f"high-cardinality text (150 distinct values > {MAX_CATEGORIES})",
        "when": "datetime columns are not supported; derive numeric features first",
    }
    assert [(c.name, c.kind) for c in table.columns] == [("x", "numeric"), ("colour", "categorical")]
    assert list(table.features.columns) == ["x", "colour"]


def test_kept_columns_are_typed_and_missing_values_counted() -> None:
    frame = mixed_frame()

    table = _prepare(frame.drop(columns=["grade", "amount"]), target="label")

    specs = {c.name: c for c in table.columns}
    assert [c.tensor for c in table.columns] == ["mean_radius", "width__cm", "colour", "size"]
    assert specs["mean radius"].kind == "numeric"
    assert specs["mean radius"].missing_in_training == int(frame["mean radius"].isna().sum()) > 0
    assert specs["colour"].kind == "categorical"
    assert specs["colour"].categories == ["blue", "green", "purple", "red"]
    assert specs["colour"].missing_in_training == int(frame["colour"].isna().sum()) > 0
    assert table.features["mean_radius"].dtype == np.float32
    # Missing text becomes "", the marker the ONNX imputer matches; never NaN or "None".
    colours = table.features["colour"]
    assert set(colours[frame["colour"].isna()]) == {""}
    assert set(colours) == {"", "blue", "green", "purple", "red"}


def test_classes_are_sorted_labels_and_targets_their_indices() -> None:
    labels = np.array(["yes", "no", "maybe"] * 20)
    table = _prepare(_with_target(labels))
    assert table.task == "multiclass"
    assert table.classes == ["maybe", "no", "yes"]
    np.testing.assert_array_equal(np.asarray(table.classes)[table.y], labels)
    assert table.y.dtype == np.int64


def test_numeric_classes_are_plain_python_values() -> None:
    table = _prepare(_with_target(np.array([3, 7] * 30)))
    assert table.classes == [3, 7]
    assert all(type(c) is int for c in table.classes)


def test_rows_with_a_missing_target_are_dropped_with_a_note() -> None:
    frame = _with_target(np.array(["a", "b", None] * 30, dtype=object), n=90)
    table = _prepare(frame)
    assert table.fingerprint.rows == 60
    assert table.notes == ["dropped 30 rows with a missing target"]


@pytest.mark.parametrize(
    ("values", "task", "expected"),
    [
        (np.array(["cat", "dog"] * 30), "auto", "binary"),
        (np.array(["a", "b", "c"] * 20), "auto", "multiclass"),
        (np.array([0, 1, 2] * 20), "auto", "multiclass"),
        (np.array([True, False] * 30), "auto", "binary"),
        (np.linspace(0.0, 1.0, 60), "auto", "regression"),
        (np.arange(60) % 30, "auto", "regression"),  # 30 distinct integers: a count, not classes
        (np.array([1.0, 2.0] * 30), "auto", "binary"),  # integral floats with few values
        (np.array([0, 1, 2] * 20), "regression", "regression"),
        (np.array([0, 1] * 30), "binary", "binary"),
    ],
)
def test_task_detection(values: Any, task: str, expected: str) -> None:
    table = _prepare(_with_target(values), task=task)
    assert table.task == expected
    if expected == "regression":
        assert table.classes == []
        assert table.y.dtype == np.float64


def test_fingerprint_records_source_digest_and_shape() -> None:
    frame = _with_target(np.array(["a", "b"] * 30))
    table = prepare(frame, "y", "auto", "t", "data/t.csv", "ab" * 32)
    assert table.fingerprint.model_dump() == {
        "source": "data/t.csv",
        "sha256": "ab" * 32,
        "rows": 60,
        "columns": 2,
        "target": "y",
    }


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["mean radius", "width (cm)"], ["mean_radius", "width__cm"]),
        (["a b", "a_b", "a-b"], ["a_b", "a_b_2", "a_b_3"]),
        (["1st", "!!!", ""], ["c_1st", "col", "col_2"]),
        (["numeric", "x"], ["numeric_2", "x"]),  # the graphs' numeric input keeps its name
    ],
)
def test_tensor_names_are_onnx_safe_and_unique(columns: list[str], expected: list[str]) -> None:
    assert list(tensor_names(columns).values()) == expected


# --- bad input -----------------------------------------------------------------------------------


def test_missing_target_column_lists_the_columns() -> None:
    with pytest.raises(BuildError, match=r"--target: column 'label' not found; columns are: x, y"):
        _prepare(_with_target(np.array(["a", "b"] * 30)), target="label")


@pytest.mark.parametrize("value", ["same", 1])
def test_one_class_target(value: Any) -> None:
    with pytest.raises(BuildError, match=r"--target 'y': expected at least 2 classes, got 1"):
        _prepare(_with_target([value] * 60))


def test_too_few_rows() -> None:
    n = MIN_ROWS - 1
    with pytest.raises(BuildError, match=rf"expected at least {MIN_ROWS} labelled rows .*, got {n}"):
        _prepare(_with_target(np.array(["a", "b"] * n)[:n], n=n))


def test_too_few_rows_counts_only_labelled_rows() -> None:
    # 50 rows, but only 30 carry a target.
    values = np.array(["a", "b"] * 15 + [None] * 20, dtype=object)
    with pytest.raises(BuildError, match=r"labelled rows for the splits, got 30"):
        _prepare(_with_target(values, n=50))
    enough = np.array(["a", "b"] * 25 + [None] * 20, dtype=object)
    assert _prepare(_with_target(enough, n=70)).fingerprint.rows == 50


def test_rare_class_is_named() -> None:
    values = np.array(["a"] * 40 + ["b"] * 40 + ["c"] * (MIN_CLASS_ROWS - 1))
    with pytest.raises(BuildError, match=rf"expected at least {MIN_CLASS_ROWS} rows per class, got 'c': 7"):
        _prepare(_with_target(values, n=len(values)))


def test_non_numeric_regression_target() -> None:
    with pytest.raises(BuildError, match=r"expected a numeric target for regression, got text values"):
        _prepare(_with_target(np.array(["a", "b"] * 30)), task="regression")


@pytest.mark.parametrize(
    ("values", "task", "message"),
    [
        (np.array(["a", "b", "c"] * 20), "binary", r"--task binary: expected 2 classes in 'y', got 3"),
        (np.array(["a", "b"] * 30), "multiclass", r"--task multiclass: expected 3 or more classes"),
        (np.arange(60) % 60, "multiclass", r"expected at most 50 classes, got 60"),
    ],
)
def test_requested_task_must_fit_the_target(values: Any, task: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        _prepare(_with_target(values), task=task)


def test_infinite_values_are_refused() -> None:
    frame = _with_target(np.linspace(0.0, 1.0, 60))
    frame.loc[3, "y"] = np.inf
    with pytest.raises(BuildError, match=r"--target 'y': expected finite numbers, found infinity"):
        _prepare(frame)
    frame = _with_target(np.array(["a", "b"] * 30))
    frame.loc[3, "x"] = -np.inf
    with pytest.raises(BuildError, match=r"column 'x': expected finite numbers, found infinity"):
        _prepare(frame)


def test_no_usable_feature_column() -> None:
    frame = pd.DataFrame({"id": np.arange(60), "y": ["a", "b"] * 30})
    with pytest.raises(BuildError, match=r"no usable feature columns \(dropped: id\)"):
        _prepare(frame)


def test_unknown_dataset() -> None:
    with pytest.raises(
        BuildError, match=r"--dataset: unknown dataset 'mnist'; expected one of breast_cancer"
    ):
        load_bundled("mnist")


def test_bundled_datasets_have_readable_labels() -> None:
    frame, target = load_bundled("breast_cancer")
    assert target == "target"
    assert set(frame[target]) == {"malignant", "benign"}
    frame, _ = load_bundled("diabetes")
    assert pd.api.types.is_float_dtype(frame["target"])
    assert frame_digest(frame) == frame_digest(load_bundled("diabetes")[0])


# --- files ---------------------------------------------------------------------------------------


def test_csv_and_parquet_are_read_with_the_digest_of_their_bytes(tmp_path: Path) -> None:
    frame = mixed_frame(60)
    csv = tmp_path / "t.csv"
    frame.to_csv(csv, index=False)
    parquet = tmp_path / "t.parquet"
    frame.to_parquet(parquet)

    from_csv, csv_digest = read_table(csv)
    from_parquet, parquet_digest = read_table(parquet)

    assert csv_digest == sha(csv.read_bytes())
    assert parquet_digest == sha(parquet.read_bytes())
    assert list(from_csv.columns) == list(frame.columns) == list(from_parquet.columns)
    assert len(from_csv) == len(from_parquet) == 60
    assert from_csv["colour"].isna().sum() == frame["colour"].isna().sum()


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(BuildError, match=rf"--data: {path}: the file is empty"):
        read_table(path)


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("x,y\n")
    with pytest.raises(BuildError, match=r"no rows or no columns"):
        read_table(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"nope.csv: no such file"):
        read_table(tmp_path / "nope.csv")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(BuildError, match=r"broken.parquet: cannot read as .parquet: ") as info:
        read_table(path)
    assert "\n" not in str(info.value)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"PK\x03\x04 spreadsheet")
    with pytest.raises(BuildError, match=r"expected a .csv or .parquet file, got '.xlsx'"):
        read_table(path)
