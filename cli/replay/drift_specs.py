"""Drift specs for replayed traffic, so offline rankings can be seen to change online.

A spec is a comma-separated list of operations applied to each row before it is sent:

    shift:COLUMN:DELTA       add DELTA to a numeric column
    scale:COLUMN:FACTOR      multiply a numeric column by FACTOR
    noise:COLUMN:STD         add Gaussian noise of STD (in units of the column's standard deviation)
    missing:COLUMN:FRACTION  blank the column (null) on that fraction of rows
    segment:COLUMN=VALUE     replay only rows whose COLUMN equals VALUE (text comparison)
    flip:FRACTION            flip that fraction of labels (concept drift: the world changed, not the inputs)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


class DriftError(ValueError):
    """A drift spec that cannot be parsed or does not fit the table."""


@dataclass(frozen=True)
class Op:
    """One drift operation."""

    kind: str
    column: str | None
    value: float | str


def parse(spec: str, frame: pd.DataFrame, target: str) -> list[Op]:
    """Parse and check a spec against the table's columns."""
    ops: list[Op] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, rest = part.partition(":")
        if kind == "flip":
            ops.append(Op("flip", None, _fraction(rest, part)))
            continue
        if kind == "segment":
            column, eq, value = rest.partition("=")
            if not eq:
                raise DriftError(f"--drift {part!r}: expected segment:COLUMN=VALUE")
            _column(frame, column, part, numeric=False)
            ops.append(Op("segment", column, value))
            continue
        column, _, arg = rest.rpartition(":")
        if kind not in ("shift", "scale", "noise", "missing") or not column:
            raise DriftError(
                f"--drift {part!r}: expected shift|scale|noise|missing:COLUMN:NUMBER, segment:COLUMN=VALUE "
                "or flip:FRACTION"
            )
        if column == target:
            raise DriftError(f"--drift {part!r}: the target column cannot drift this way (use flip:FRACTION)")
        _column(frame, column, part, numeric=kind != "missing")
        number = _fraction(arg, part) if kind == "missing" else _number(arg, part)
        ops.append(Op(kind, column, number))
    if not ops:
        raise DriftError("--drift: empty spec")
    return ops


def _column(frame: pd.DataFrame, column: str, part: str, numeric: bool) -> None:
    if column not in frame.columns:
        raise DriftError(f"--drift {part!r}: no column {column!r}")
    if numeric and not pd.api.types.is_numeric_dtype(frame[column]):
        raise DriftError(f"--drift {part!r}: column {column!r} is not numeric")


def _number(text: str, part: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise DriftError(f"--drift {part!r}: expected a number, got {text!r}") from exc
    if not np.isfinite(value):
        raise DriftError(f"--drift {part!r}: expected a finite number, got {text!r}")
    return value


def _fraction(text: str, part: str) -> float:
    value = _number(text, part)
    if not 0 <= value <= 1:
        raise DriftError(f"--drift {part!r}: expected a fraction in [0, 1], got {text}")
    return value


def apply(ops: list[Op], frame: pd.DataFrame, target: str, rng: np.random.Generator) -> pd.DataFrame:
    """A drifted copy of the table (rows may be filtered by segment ops)."""
    out = frame.copy()
    for op in ops:
        if op.kind == "segment":
            assert op.column is not None
            out = out[out[op.column].astype(str) == str(op.value)]
            if out.empty:
                raise DriftError(f"--drift segment:{op.column}={op.value}: no rows match")
            continue
        if op.kind == "flip":
            flip = rng.random(len(out)) < float(op.value)
            labels = out[target].unique()
            if len(labels) < 2:
                continue
            out.loc[flip, target] = [
                rng.choice([lab for lab in labels if lab != cur]) for cur in out.loc[flip, target]
            ]
            continue
        assert op.column is not None
        col = out[op.column]
        if op.kind == "shift":
            out[op.column] = col + float(op.value)
        elif op.kind == "scale":
            out[op.column] = col * float(op.value)
        elif op.kind == "noise":
            std = float(frame[op.column].std()) or 1.0
            out[op.column] = col + rng.normal(0, float(op.value) * std, len(out))
        elif op.kind == "missing":
            blank = rng.random(len(out)) < float(op.value)
            out[op.column] = col.astype(object).where(~blank, None)
    return out.reset_index(drop=True)
