"""Free-text columns: the TF-IDF vectoriser that goes inside the graph, its search recipes, and the
settings skl2onnx converts faithfully (measured against scikit-learn on every export's test rows).

What converts exactly (skl2onnx 1.20, onnxruntime 1.32, |dP| ~1e-7):
- ``analyzer="char"`` n-grams, any text (non-ASCII letters included);
- ``analyzer="word"`` with the ASCII token pattern below. skl2onnx turns scikit-learn's default pattern
  (``\\b\\w\\w+\\b``, Unicode words of two or more letters) into ``[a-zA-Z0-9_]+``: single letters become
  tokens and a word with a non-ASCII letter is cut apart, so word bigrams and non-ASCII words differ
  (|dP| up to 0.21 measured). With that same ASCII pattern on the scikit-learn side both agree;
- lowercasing, with the graph's StringNormalizer pinned to the C.UTF-8 locale: glibc builds it in
  (Unicode case mapping, "ÄRGER" -> "ärger" as Python does), where skl2onnx's default asks the system
  for en_US.UTF-8, which a slim image lacks ("Failed to construct locale").

Refused (:func:`check_convertible`, before conversion): ``char_wb``, ``sublinear_tf`` (the graph computes
log(tf + 1) where scikit-learn computes log(tf) + 1), accent stripping, custom tokenisers,
preprocessors or analysers, and any other word token pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from skl2onnx import update_registered_converter
from skl2onnx.common._registration import get_converter
from skl2onnx.operator_converters.tfidf_vectoriser import convert_sklearn_tfidf_vectoriser
from skl2onnx.shape_calculators.text_vectorizer import calculate_sklearn_text_vectorizer_output_shapes
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer

from contract.manifest import ColumnSpec

TOKEN_PATTERN = r"[a-zA-Z0-9_]+"
"""Words as runs of ASCII letters, digits and underscores: the pattern the graph's tokenizer uses."""
MAX_FEATURES = 20_000
"""Vocabulary cap per text column: keeps a graph a few MB and a single-row run tens of µs."""
GRAPH_LOCALE = "C.UTF-8"

# Each recipe is sampled as a whole (word n-grams or character n-grams), then its ranges; the same
# recipe for every text column of a table.
_RECIPES: tuple[dict[str, list[Any]], ...] = (
    {"analyzer": ["word"], "ngram_range": [(1, 1), (1, 2)], "min_df": [1, 2]},
    {"analyzer": ["char"], "ngram_range": [(1, 3), (2, 4), (2, 5)], "min_df": [1, 2]},
)


class TextVectorizer(TfidfVectorizer):
    """scikit-learn's TF-IDF vectoriser, quiet about the word pattern it keeps for character n-grams:
    skl2onnx's converter compiles ``token_pattern`` whatever the analyser (None fails to convert),
    and scikit-learn warns on every fit that character n-grams do not use it."""

    def _warn_for_unused_params(self) -> None:
        if self.analyzer == "char" and self.tokenizer is None and self.stop_words is None:
            return
        super()._warn_for_unused_params()


# the same converter and options skl2onnx registers for TfidfVectorizer itself
update_registered_converter(
    TextVectorizer,
    "GatewayTextVectorizer",
    calculate_sklearn_text_vectorizer_output_shapes,
    convert_sklearn_tfidf_vectoriser,
    options=get_converter("SklearnTfidfVectorizer").get_allowed_options(),
)


def vectorizer() -> TextVectorizer:
    """The TF-IDF step of one text column, with settings that convert exactly."""
    return TextVectorizer(token_pattern=TOKEN_PATTERN, max_features=MAX_FEATURES, dtype=np.float64)


def step_name(index: int) -> str:
    """The ColumnTransformer step of the index-th text column (keys the search space)."""
    return f"text_{index}"


def text_space(columns: Sequence[ColumnSpec]) -> list[dict[str, list[Any]]]:
    """The vectoriser part of the search space, one dict per recipe, keyed for the pipeline's "prep"
    step; empty for a table without text columns."""
    n = sum(1 for c in columns if c.kind == "text")
    if not n:
        return []
    return [
        {f"prep__{step_name(i)}__{key}": values for i in range(n) for key, values in recipe.items()}
        for recipe in _RECIPES
    ]


def _vectorizers(model: Any) -> list[TfidfVectorizer]:
    found: list[TfidfVectorizer] = []
    if isinstance(model, TfidfVectorizer):
        return [model]
    for child in getattr(model, "steps", []):
        found += _vectorizers(child[1])
    for child in getattr(model, "transformers_", getattr(model, "transformers", [])):
        found += _vectorizers(child[1])
    return found


def check_convertible(model: BaseEstimator) -> None:
    """Refuse, naming the setting, any TF-IDF step whose graph would not answer as scikit-learn does."""
    for v in _vectorizers(model):
        problems = []
        if v.analyzer not in ("word", "char"):
            problems.append(f"analyzer={v.analyzer!r} (only 'word' and 'char' convert)")
        if v.analyzer == "word" and v.token_pattern != TOKEN_PATTERN:
            problems.append(f"token_pattern={v.token_pattern!r} (word n-grams need {TOKEN_PATTERN!r})")
        if v.sublinear_tf:
            problems.append("sublinear_tf=True (the graph computes log(tf + 1), not log(tf) + 1)")
        if v.strip_accents is not None:
            problems.append(f"strip_accents={v.strip_accents!r}")
        for attr in ("tokenizer", "preprocessor"):
            if getattr(v, attr) is not None:
                problems.append(f"a custom {attr}")
        if v.norm not in ("l1", "l2", None):
            problems.append(f"norm={v.norm!r}")
        if problems:
            raise ValueError("TF-IDF settings that do not convert to ONNX: " + "; ".join(problems))


def pin_locale(onx: onnx.ModelProto) -> onnx.ModelProto:
    """Every StringNormalizer lowercases in C.UTF-8 (see the module docstring), in place."""
    for graph in _graphs(onx.graph):
        for node in graph.node:
            if node.op_type != "StringNormalizer":
                continue
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("locale", GRAPH_LOCALE)])
    return onx


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and every subgraph (a Scan body holds the normaliser when empty strings are kept)."""
    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out += _graphs(attr.g)
            out += [g for sub in attr.graphs for g in _graphs(sub)]
    return out
