"""Validating raw records against the manifest's input schema, and shaping answers for clients."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import InvalidBody, InvalidField, PayloadTooLarge, describe
from service.feeds import MISSING_CATEGORY
from service.manifest import ColumnSpec, Manifest
from service.runtime import Output


def records_to_feeds(
    manifest: Manifest, records: Any, max_rows: int, field: str = "records"
) -> dict[str, npt.NDArray[Any]]:
    """Check every record (exactly the schema's columns; numbers or null for numeric columns, strings or
    null for categorical ones; no NaN or infinity) and build one [N, 1] tensor per column."""
    if not isinstance(records, list):
        raise InvalidField(field, "a list of records", describe(records))
    if not records:
        raise InvalidField(field, "at least one record", "an empty list")
    if len(records) > max_rows:
        raise PayloadTooLarge(f"{field}: expected at most {max_rows} records, got {len(records)}")
    columns = manifest.inputs
    names = {c.name for c in columns}
    n = len(records)
    numeric = {c.name: np.empty((n, 1), dtype=np.float32) for c in columns if c.kind == "numeric"}
    text = {c.name: np.empty((n, 1), dtype=object) for c in columns if c.kind == "categorical"}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InvalidField(f"{field}[{i}]", "an object of {column: value}", describe(rec))
        if len(rec) != len(names) or rec.keys() != names:
            missing = sorted(names - rec.keys())
            extra = sorted(set(rec) - names)
            if missing:
                raise InvalidField(f"{field}[{i}].{missing[0]}", "a value (null if missing)", "no field")
            raise InvalidField(
                f"{field}[{i}].{extra[0]}", f"one of the {len(names)} schema columns", "an unknown field"
            )
        for name, arr in numeric.items():
            v = rec[name]
            if v is None:
                arr[i, 0] = np.nan
            elif type(v) in (int, float):
                if not math.isfinite(v):
                    raise InvalidField(f"{field}[{i}].{name}", "a finite number or null", describe(v))
                arr[i, 0] = v
            else:
                raise InvalidField(f"{field}[{i}].{name}", "a number or null", describe(v))
        for name, arr in text.items():
            v = rec[name]
            if v is None:
                arr[i, 0] = MISSING_CATEGORY
            elif isinstance(v, str):
                arr[i, 0] = v
            else:
                raise InvalidField(f"{field}[{i}].{name}", "a string or null", describe(v))
    by_name = {c.name: c for c in columns}
    feeds: dict[str, npt.NDArray[Any]] = {}
    for name, arr in (*numeric.items(), *text.items()):
        feeds[by_name[name].tensor] = arr
    return feeds


def columns_to_feeds(manifest: Manifest, tensors: dict[str, npt.NDArray[Any]], rows: int) -> dict[str, Any]:
    """OIP inputs (already decoded per column name) to feeds keyed by ONNX input name."""
    out: dict[str, Any] = {}
    for c in manifest.inputs:
        arr = tensors[c.name]
        out[c.tensor] = arr.reshape(rows, 1)
    return out


def class_label(manifest: Manifest, index: int) -> Any:
    """The class label a client sees for a class index."""
    return manifest.classes[index]


def rows_json(manifest: Manifest, out: Output) -> list[dict[str, Any]]:
    """Per-row answers: label and probabilities by class, or a value."""
    if manifest.task == "regression":
        assert out.values is not None
        return [{"value": float(v)} for v in out.values]
    assert out.labels is not None and out.proba is not None
    classes = [str(c) for c in manifest.classes]
    labels = manifest.classes
    return [
        {"label": labels[int(lab)], "probabilities": dict(zip(classes, map(float, p), strict=True))}
        for lab, p in zip(out.labels, out.proba, strict=True)
    ]


def schema_json(columns: Sequence[ColumnSpec]) -> list[dict[str, Any]]:
    """The input schema as clients see it."""
    return [
        {"name": c.name, "kind": c.kind, **({"categories": c.categories} if c.kind == "categorical" else {})}
        for c in columns
    ]


def check_request_id(value: Any, field: str = "request_id") -> str:
    """Client request ids: 1-128 printable characters without spaces."""
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.isprintable() or " " in value:
        raise InvalidField(field, "1-128 printable characters without spaces", describe(value))
    return value


def body_object(body: Any) -> dict[str, Any]:
    """A JSON body that must be an object."""
    if not isinstance(body, dict):
        raise InvalidBody(f"body: expected a JSON object, got {describe(body)}")
    return body
