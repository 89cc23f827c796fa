"""The input reference: a compact picture of each input column in the training data, and the one
binning that builders use to write it and the service uses to count live traffic against it.

A version folder may hold ``reference.json`` (written by every build since schema 3 of the ledger; a
repository without one is served as before, and /drift says it has no reference). Numeric columns are
cut at their training deciles (ties merged, so a discrete column has fewer bins), plus one bin for
missing values; categorical columns get one bin per training category (the most frequent
MAX_CATEGORIES), one for any other value and one for missing; text columns are cut at the deciles of
their length in characters (a change in what clients send shows there first), plus missing. Binning
the same [N, k] float32 feeds offline and online is what makes the counts comparable: a value equal to
an edge falls in the lower bin on both sides.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, model_validator

from contract.feeds import MISSING_CATEGORY
from contract.manifest import NUMERIC_INPUT, ColumnSpec

REFERENCE_FILE = "reference.json"
QUANTILES = tuple(q / 10 for q in range(1, 10))
MAX_CATEGORIES = 30


class ColumnReference(BaseModel):
    """One column's bins and the training rows in each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["numeric", "categorical", "text"]
    edges: list[float] = []
    """numeric, text (of the length in characters): ascending cut points; bin i holds
    edges[i-1] < x <= edges[i], the last bin x > edges[-1]."""
    categories: list[str] = []
    """categorical: one bin each, then "other", then missing."""
    counts: list[int]
    """Training rows per bin, the missing bin last."""

    @model_validator(mode="after")
    def _check(self) -> ColumnReference:
        expected = len(self.edges) + 2 if self.kind != "categorical" else len(self.categories) + 2
        if len(self.counts) != expected:
            raise ValueError(f"column {self.name!r}: expected {expected} counts, got {len(self.counts)}")
        if self.edges != sorted(set(self.edges)):
            raise ValueError(f"column {self.name!r}: edges must be strictly ascending")
        return self

    def bin_names(self) -> list[str]:
        """Human names of the bins, in order."""
        if self.kind == "categorical":
            return [*self.categories, "(other)", "(missing)"]
        e = [f"{v:.0f} chars" if self.kind == "text" else f"{v:.4g}" for v in self.edges]
        if not e:
            return ["(any)", "(missing)"]
        inner = [f"({a}, {b}]" for a, b in itertools.pairwise(e)]
        return [f"<= {e[0]}", *inner, f"> {e[-1]}", "(missing)"]


class InputReference(BaseModel):
    """Every served input column's reference, in manifest order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    split: str = "train"
    rows: int
    columns: list[ColumnReference]


def build_reference(
    columns: Sequence[ColumnSpec], feeds: Mapping[str, npt.NDArray[Any]], split: str = "train"
) -> InputReference:
    """The reference of a table split, from its graph feeds (as the service will see live rows)."""
    refs: list[ColumnReference] = []
    numeric = [c for c in columns if c.kind == "numeric"]
    x = feeds.get(NUMERIC_INPUT)
    rows = len(next(iter(feeds.values())))
    for j, spec in enumerate(numeric):
        assert x is not None
        col = x[:, j].astype(np.float64)
        edges = _decile_edges(col[~np.isnan(col)])
        refs.append(
            ColumnReference(name=spec.name, kind="numeric", edges=edges, counts=[0] * (len(edges) + 2))
        )
    for spec in columns:
        if spec.kind == "numeric":
            continue
        values = feeds[spec.tensor][:, 0]
        if spec.kind == "text":
            lengths = np.asarray([len(v) for v in values if v != MISSING_CATEGORY], dtype=np.float64)
            edges = _decile_edges(lengths)
            refs.append(
                ColumnReference(name=spec.name, kind="text", edges=edges, counts=[0] * (len(edges) + 2))
            )
            continue
        freq = Counter(str(v) for v in values if v != MISSING_CATEGORY)
        cats = [v for v, _ in sorted(freq.items(), key=lambda t: (-t[1], t[0]))[:MAX_CATEGORIES]]
        refs.append(
            ColumnReference(name=spec.name, kind="categorical", categories=cats, counts=[0] * (len(cats) + 2))
        )
    binner = Binner(refs)
    counts, offsets = binner.count(feeds, string_tensors(columns)), binner.offsets
    done = [
        r.model_copy(update={"counts": [int(v) for v in counts[offsets[i] : offsets[i + 1]]]})
        for i, r in enumerate(refs)
    ]
    return InputReference(split=split, rows=rows, columns=done)


def string_tensors(columns: Sequence[ColumnSpec]) -> list[str]:
    """The string inputs (categorical and text) in manifest order, as :meth:`Binner.count` takes them."""
    return [c.tensor for c in columns if c.kind != "numeric"]


def _decile_edges(present: npt.NDArray[np.float64]) -> list[float]:
    edges = sorted({float(v) for v in np.quantile(present, QUANTILES)}) if len(present) else []
    # the top edge equal to the maximum would leave the last bin empty in training: drop it
    if edges and edges[-1] >= float(present.max()):
        edges = edges[:-1]
    return edges


@dataclass
class Binner:
    """Counts rows into the reference's bins: one flat int64 vector, columns in reference order."""

    columns: Sequence[ColumnReference]

    def __post_init__(self) -> None:
        sizes = [len(c.counts) for c in self.columns]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        numeric = [c for c in self.columns if c.kind == "numeric"]
        width = max((len(c.edges) for c in numeric), default=0)
        # padded with +inf: a value is never above a pad, so the pads never move it up a bin
        self._edges = np.full((len(numeric), max(width, 1)), np.inf, dtype=np.float64)
        for j, c in enumerate(numeric):
            self._edges[j, : len(c.edges)] = c.edges
        self._missing_bin = np.asarray([len(c.edges) + 1 for c in numeric], dtype=np.int64)
        self._numeric_offsets = self.offsets[: len(numeric)]
        self._categorical = {
            i: (int(self.offsets[i]), {v: k for k, v in enumerate(c.categories)}, len(c.categories))
            for i, c in enumerate(self.columns)
            if c.kind == "categorical"
        }
        self._text = {
            i: (int(self.offsets[i]), np.asarray(c.edges, dtype=np.float64), len(c.edges) + 1)
            for i, c in enumerate(self.columns)
            if c.kind == "text"
        }
        self._strings = [i for i, c in enumerate(self.columns) if c.kind != "numeric"]

    def count(self, feeds: Mapping[str, npt.NDArray[Any]], tensors: Sequence[str]) -> npt.NDArray[np.int64]:
        """Bin counts of a batch of graph feeds; ``tensors`` names the string (categorical and text)
        inputs in reference order (the manifest's tensor names, :func:`string_tensors`)."""
        out = np.zeros(self.size, dtype=np.int64)
        x = feeds.get(NUMERIC_INPUT)
        if x is not None and len(self._numeric_offsets):
            values = np.asarray(x, dtype=np.float64)
            # edges strictly below the value (the +inf pads never are), one edge rank at a time: no
            # [N, columns, edges] temporary when the service bins a whole batch of requests at once
            bins = np.zeros(values.shape, dtype=np.int16)  # at most a few dozen edges a column
            for e in range(self._edges.shape[1]):
                bins += values > self._edges[:, e]
            missing = np.isnan(values)
            if missing.any():
                bins = np.where(missing, self._missing_bin[None, :], bins)
            out += np.bincount((bins + self._numeric_offsets[None, :]).ravel(), minlength=self.size)
        for i, tensor in zip(self._strings, tensors, strict=True):
            values = feeds[tensor][:, 0].tolist()
            if i in self._text:
                offset, edges, missing_bin = self._text[i]
                lengths = np.fromiter(map(len, values), dtype=np.float64, count=len(values))
                # a value equal to an edge falls in the lower bin, as for numeric columns
                ranks = np.searchsorted(edges, lengths, side="left")
                ranks[lengths == 0] = missing_bin  # "" is missing
                out += np.bincount(ranks + offset, minlength=self.size)
                continue
            offset, index, n = self._categorical[i]
            # one dictionary lookup per distinct value, not per row
            for v, k in Counter(values).items():
                out[offset + (n + 1 if v == MISSING_CATEGORY else index.get(str(v), n))] += k
        return out

    def split(self, counts: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
        """A flat count vector cut back into one array per column."""
        return [counts[self.offsets[i] : self.offsets[i + 1]] for i in range(len(self.columns))]
