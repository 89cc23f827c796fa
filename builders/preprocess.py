"""The preprocessing that goes inside every ONNX graph: raw columns in, model features out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from builders import text
from builders.families import Family
from contract.feeds import MISSING_CATEGORY
from contract.manifest import ColumnSpec


def make_pipeline(family: Family, columns: Sequence[ColumnSpec], seed: int) -> Pipeline:
    """ColumnTransformer (impute, one-hot, scale where the family needs it, TF-IDF for each text
    column) followed by the model.

    Columns are selected by position (numeric ones first, as builders.data orders them): skl2onnx
    maps positions onto the graph inputs, so the numeric columns become one [N, k] input. A text
    column is selected by its scalar position, so its vectoriser gets the 1-D strings it expects."""
    kinds = [c.kind for c in columns]
    numeric = [i for i, k in enumerate(kinds) if k == "numeric"]
    categorical = [i for i, k in enumerate(kinds) if k == "categorical"]
    texts = [i for i, k in enumerate(kinds) if k == "text"]
    strings = categorical + texts
    if numeric and strings and max(numeric) > min(strings):
        raise ValueError("columns: numeric columns must come before string (categorical, text) ones")
    transformers: list[tuple[str, object, object]] = []
    if numeric:
        steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy="median"))]
        if family.scale:
            # naive Bayes on counts needs non-negative features: [0, 1] on the training range
            steps.append(("scale", MinMaxScaler() if family.nonnegative else StandardScaler()))
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
    for j, i in enumerate(texts):
        transformers.append((text.step_name(j), text.vectorizer(), i))
    # TF-IDF features stay sparse (thousands of columns, a few non-zero per row); tabular ones dense
    prep = ColumnTransformer(transformers, remainder="drop", sparse_threshold=1.0 if texts else 0.0)
    return Pipeline([("prep", prep), ("model", family.make(seed))])


def search_space(family: Family, columns: Sequence[ColumnSpec]) -> dict[str, Any] | list[dict[str, Any]]:
    """The family's space, and for a table with text columns the vectoriser's recipes with it (a list:
    a recipe is drawn first, then its values, as scikit-learn's searches do with a list of dicts)."""
    recipes = text.text_space(columns)
    if not recipes or family.role == "baseline":  # the prior ignores its features
        return family.space
    return [{**family.space, **recipe} for recipe in recipes]
