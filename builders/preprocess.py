"""The preprocessing that goes inside every ONNX graph: raw columns in, model features out."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from builders.families import Family
from contract.feeds import MISSING_CATEGORY
from contract.manifest import ColumnSpec


def make_pipeline(family: Family, columns: Sequence[ColumnSpec], seed: int) -> Pipeline:
    """ColumnTransformer (impute, one-hot, scale where the family needs it) followed by the model.

    Columns are selected by position (numeric ones first, as builders.data orders them): skl2onnx
    maps positions onto the graph inputs, so the numeric columns become one [N, k] input."""
    kinds = [c.kind for c in columns]
    numeric = [i for i, k in enumerate(kinds) if k == "numeric"]
    categorical = [i for i, k in enumerate(kinds) if k == "categorical"]
    if numeric and categorical and max(numeric) > min(categorical):
        raise ValueError("columns: numeric columns must come before categorical ones")
    transformers = []
    if numeric:
        steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy="median"))]
        if family.scale:
            steps.append(("scale", StandardScaler()))
        transformers.append(("num", Pipeline(steps), numeric))
    if categorical:
        transformers.append(
            (
                "cat",
                Pipeline(
                    [
                        # skl2onnx's string imputer needs "" as the missing marker, not NaN.
                        (
                            "impute",
                            SimpleImputer(
                                strategy="constant", missing_values=MISSING_CATEGORY, fill_value="__missing__"
                            ),
                        ),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    prep = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("prep", prep), ("model", family.make(seed))])
