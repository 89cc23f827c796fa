"""Validating raw records against the manifest's input schema, and shaping answers for clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from contract.feeds import MISSING_CATEGORY
from contract.manifest import NUMERIC_INPUT, ColumnSpec, Manifest
from contract.outputs import Output
from service.errors import InvalidBody, InvalidField, PayloadTooLarge, describe

_NUMBER_TYPES: frozenset[type] = frozenset({int, float, type(None)})
_TEXT_TYPES: frozenset[type] = frozenset({str, type(None)})
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NONE = type(None)


def records_to_feeds(
    manifest: Manifest, records: Any, max_rows: int, field: str = "records"
) -> dict[str, npt.NDArray[Any]]:
    """Check every record (exactly the schema's columns; numbers or null for numeric columns, strings or
    null for categorical ones; no NaN or infinity) and build the graph feeds (contract.feeds' layout).

    Column-wise with a type-set fast path: a clean batch costs one pass per column; the slow path
    runs only to name the first bad value."""
    if not isinstance(records, list):
        raise InvalidField(field, "a list of records", describe(records))
    if not records:
        raise InvalidField(field, "at least one record", "an empty list")
    if len(records) > max_rows:
        raise PayloadTooLarge(f"{field}: expected at most {max_rows} records, got {len(records)}")
    schema = _compiled(manifest)
    names = schema.names
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise InvalidField(f"{field}[{i}]", "an object of {column: value}", describe(rec))
        if rec.keys() != names:
            missing = sorted(names - rec.keys())
            if missing:
                raise InvalidField(f"{field}[{i}].{missing[0]}", "a value (null if missing)", "no field")
            extra = sorted(set(rec) - names)
            raise InvalidField(
                f"{field}[{i}].{extra[0]}", f"one of the {len(names)} schema columns", "an unknown field"
            )
    n = len(records)
    feeds: dict[str, npt.NDArray[Any]] = {}
    if schema.numeric:
        rows = [[rec[name] for name in schema.numeric] for rec in records]
        kinds: set[type] = set()
        for row in rows:
            kinds.update(map(type, row))
        if not kinds <= _NUMBER_TYPES:
            for j, name in enumerate(schema.numeric):
                _raise_bad([row[j] for row in rows], field, name, "a number or null", _NUMBER_TYPES)
        # The graphs compute in float32: a number beyond its range (~3.4e38) would reach them as
        # infinity, so it is refused like infinity itself. Without missing values the check runs on
        # the Python floats (half the cost of the array path, which is what a single row pays).
        if (
            _NONE not in kinds
            and max(map(max, rows)) <= _FLOAT32_MAX
            and min(map(min, rows)) >= -_FLOAT32_MAX
        ):
            feeds[NUMERIC_INPUT] = np.array(rows, dtype=np.float32)
        else:
            arr = np.array(rows, dtype=np.float64)  # None -> nan (missing, imputed inside the graph)
            out_of_range = np.abs(arr) > _FLOAT32_MAX  # NaN compares False: missing stays allowed
            if out_of_range.any():
                i, j = (int(x[0]) for x in np.nonzero(out_of_range))
                raise InvalidField(
                    f"{field}[{i}].{schema.numeric[j]}",
                    "a finite number (float32 range) or null",
                    describe(rows[i][j]),
                )
            feeds[NUMERIC_INPUT] = arr.astype(np.float32)
    for name, tensor in zip(schema.text, schema.text_tensors, strict=True):
        values = [rec[name] for rec in records]
        if not set(map(type, values)) <= _TEXT_TYPES:
            _raise_bad(values, field, name, "a string or null", _TEXT_TYPES)
        text = np.empty((n, 1), dtype=object)
        text[:, 0] = [MISSING_CATEGORY if v is None else v for v in values]
        feeds[tensor] = text
    return feeds


@dataclass(frozen=True)
class _Schema:
    names: frozenset[str]
    numeric: tuple[str, ...]
    text: tuple[str, ...]
    text_tensors: tuple[str, ...]


_SCHEMAS: dict[int, tuple[Manifest, _Schema]] = {}


def _compiled(manifest: Manifest) -> _Schema:
    """Column names resolved once per manifest: pydantic attribute access is slow on the hot path."""
    hit = _SCHEMAS.get(id(manifest))
    if hit is not None and hit[0] is manifest:
        return hit[1]
    cols = manifest.inputs
    schema = _Schema(
        names=frozenset(c.name for c in cols),
        numeric=tuple(c.name for c in cols if c.kind == "numeric"),
        text=tuple(c.name for c in cols if c.kind == "categorical"),
        text_tensors=tuple(c.tensor for c in cols if c.kind == "categorical"),
    )
    if len(_SCHEMAS) > 16:  # a few reloads' worth; old manifests need not stay alive
        _SCHEMAS.clear()
    _SCHEMAS[id(manifest)] = (manifest, schema)
    return schema


def _raise_bad(values: list[Any], field: str, column: str, expected: str, allowed: frozenset[type]) -> None:
    for i, v in enumerate(values):
        if type(v) not in allowed:
            raise InvalidField(f"{field}[{i}].{column}", expected, describe(v))


def rows_json(manifest: Manifest, out: Output) -> list[dict[str, Any]]:
    """Per-row answers: label and probabilities by class, or a value."""
    if manifest.task == "regression":
        assert out.values is not None
        return [{"value": v} for v in out.values.tolist()]
    assert out.labels is not None and out.proba is not None
    classes = [str(c) for c in manifest.classes]
    labels = manifest.classes
    # tolist() converts whole arrays at once: iterating numpy rows makes a numpy scalar per value.
    return [
        {"label": labels[lab], "probabilities": dict(zip(classes, p, strict=True))}
        for lab, p in zip(out.labels.tolist(), out.proba.tolist(), strict=True)
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


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; InvalidBody (400) for an empty or malformed one."""
    if not raw.strip():
        raise InvalidBody("body: expected a JSON object, got an empty body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"body: malformed JSON ({exc}); NaN and Infinity are not JSON") from exc


def body_object(body: Any) -> dict[str, Any]:
    """A JSON body that must be an object."""
    if not isinstance(body, dict):
        raise InvalidBody(f"body: expected a JSON object, got {describe(body)}")
    return body
