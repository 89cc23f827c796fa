"""Free-text columns: found or named, refused when they hold no text, tokenised inside the graph
exactly as scikit-learn does (non-ASCII and upper case included), and a whole text build."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from builders import export
from builders.build import BuildOptions, run_build
from builders.data import load_fortunes, prepare
from builders.errors import BuildError
from builders.families import CLASSIFIERS, families_for
from builders.members import session
from builders.preprocess import make_pipeline
from contract.feeds import make_feeds
from contract.manifest import ColumnSpec
from contract.reference import REFERENCE_FILE, InputReference
from contract.verify import load_card, verify
from tests.helpers import TextRepo

DIGEST = "0" * 64
WORDS = ["alpha", "beta", "gamma", "delta", "über", "café", "Ärger", "x", "I", "straße"]


def _text_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    notes = [" ".join(rng.choice(WORDS[:5] if label else WORDS[4:], size=rng.integers(3, 9))) for label in y]
    return pd.DataFrame(
        {
            "note": notes,
            "code": [f"u{i:04d}" for i in range(n)],  # unique short strings: an identifier, not text
            "city": rng.choice(["paris", "lyon"], n),
            "y": np.where(y == 1, "yes", "no"),
        }
    )


def test_free_text_is_found_and_identifiers_still_dropped() -> None:
    table = prepare(_text_frame(), "y", "auto", "t", "tests", DIGEST)

    assert [(c.name, c.kind) for c in table.columns] == [("city", "categorical"), ("note", "text")]
    assert [d.name for d in table.dropped] == ["code"]


@pytest.mark.parametrize(
    ("column", "frame_edit", "message"),
    [
        ("nope", None, "--text: column 'nope' not found; columns are: note, code, city, y"),
        ("y", None, "--text 'y': that is the target column"),
        (
            "n",
            lambda f: f.assign(n=np.arange(len(f))),
            "--text 'n': expected a column of text, got int64 values",
        ),
        (
            "blank",
            lambda f: f.assign(blank=["  "] * len(f)),
            "--text 'blank': expected text, but every value is missing or blank",
        ),
        (
            "none",
            lambda f: f.assign(none=[None] * len(f)),
            "--text 'none': expected text, but every value is missing or blank",
        ),
    ],
)
def test_a_named_text_column_must_hold_text(column: str, frame_edit: Any, message: str) -> None:
    frame = _text_frame()
    if frame_edit is not None:
        frame = frame_edit(frame)

    with pytest.raises(BuildError) as err:
        prepare(frame, "y", "auto", "t", "tests", DIGEST, text=[column])

    assert str(err.value) == message


def test_a_named_short_column_becomes_text() -> None:
    table = prepare(_text_frame(), "y", "auto", "t", "tests", DIGEST, text=["code"])

    assert [(c.name, c.kind) for c in table.columns] == [
        ("city", "categorical"),
        ("note", "text"),
        ("code", "text"),
    ]


def test_text_tables_get_the_text_field_and_refuse_dense_families() -> None:
    assert [f.name for f in families_for("binary", None, text=True)] == [
        "dummy",
        "logreg",
        "complement_nb",
        "linear_svm",
    ]
    assert "complement_nb" not in [f.name for f in families_for("binary", None)]
    assert [f.name for f in families_for("regression", None, text=True)] == ["dummy", "ridge"]
    with pytest.raises(BuildError, match="unknown family 'random_forest' for binary with text columns"):
        families_for("binary", ["random_forest"], text=True)


COLUMNS = [
    ColumnSpec(name="n", tensor="n", kind="numeric"),
    ColumnSpec(name="note", tensor="note", kind="text"),
]
HOSTILE = [
    "ÄRGER ÜBER CAFÉ",
    "Alpha BETA i x",
    "",
    "   ",
    "!!",
    "straße STRASSE ß",
    "日本語 テキスト",
    "a\tb\nc",
]


@pytest.mark.parametrize(
    "recipe",
    [
        {"analyzer": "word", "ngram_range": (1, 2)},
        {"analyzer": "char", "ngram_range": (1, 4)},
    ],
)
@pytest.mark.parametrize("family", ["logreg", "complement_nb", "linear_svm"])
def test_text_graphs_answer_as_scikit_learn_on_hostile_text(recipe: dict[str, Any], family: str) -> None:
    frame = _text_frame()
    x = pd.DataFrame({"n": np.arange(len(frame), dtype=np.float32), "note": frame["note"]})
    y = (frame["y"] == "yes").to_numpy(dtype=np.int64)
    fam = next(f for f in CLASSIFIERS if f.name == family)
    pipe = make_pipeline(fam, COLUMNS, seed=0).set_params(
        **{f"prep__text_0__{k}": v for k, v in recipe.items()}
    )
    pipe.fit(x, y)
    onx = export.to_onnx(pipe, export.initial_types(COLUMNS), True, family)
    normalisers = [n for n in onx.graph.node if n.op_type == "StringNormalizer"]
    assert normalisers and all(
        a.s == b"C.UTF-8" for n in normalisers for a in n.attribute if a.name == "locale"
    )
    rows = pd.DataFrame({"n": np.arange(len(HOSTILE), dtype=np.float32), "note": HOSTILE})
    feeds = make_feeds(COLUMNS, {"n": rows["n"].tolist(), "note": HOSTILE})
    _, proba = session(onx).run(None, feeds)

    np.testing.assert_allclose(proba, pipe.predict_proba(rows), atol=export.PROBA_TOLERANCE)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"sublinear_tf": True}, "sublinear_tf=True"),
        ({"analyzer": "char_wb"}, "analyzer='char_wb'"),
        ({"token_pattern": r"(?u)\b\w\w+\b"}, "token_pattern="),
        ({"strip_accents": "unicode"}, "strip_accents='unicode'"),
    ],
)
def test_settings_that_do_not_convert_are_refused_by_name(setting: dict[str, Any], message: str) -> None:
    frame = _text_frame()
    x = pd.DataFrame({"n": np.zeros(len(frame), dtype=np.float32), "note": frame["note"]})
    fam = next(f for f in CLASSIFIERS if f.name == "logreg")
    pipe = make_pipeline(fam, COLUMNS, seed=0).set_params(
        **{f"prep__text_0__{k}": v for k, v in setting.items()}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn's own note on unused settings
        pipe.fit(x, frame["y"])

    with pytest.raises(
        ValueError, match="TF-IDF settings that do not convert to ONNX: .*" + message.replace("(", r"\(")
    ):
        export.to_onnx(pipe, export.initial_types(COLUMNS), True, "logreg")


def test_the_fortunes_table_ships_in_a_debian_package() -> None:
    frame = load_fortunes()

    assert frame.columns.tolist() == ["text", "topic"]
    counts = frame["topic"].value_counts()
    assert set(counts.index) == {"computers", "food", "law", "medicine", "politics", "sports"}
    assert counts.min() >= 70 and counts.max() <= 150
    assert frame["text"].str.len().min() > 0


def test_a_text_build_serves_every_text_family_with_exact_graphs(text_repo: TextRepo) -> None:
    manifest = verify(text_repo.version)

    assert [c.kind for c in manifest.inputs] == ["numeric", "categorical", "text"]
    assert [m.name for m in manifest.members] == ["dummy", "logreg", "complement_nb", "linear_svm"]
    for member in manifest.members:
        card = load_card(text_repo.version / member.card)
        assert card.parity is not None and card.parity.passed, member.name
        if member.name != "dummy":
            assert card.hyperparameters["text_0__analyzer"] in ("word", "char"), card.hyperparameters
    reference = InputReference.model_validate(json.loads((text_repo.version / REFERENCE_FILE).read_text()))
    kinds = {c.name: c for c in reference.columns}
    assert kinds["text"].kind == "text" and kinds["text"].edges, "text drift is binned on length"
    assert sum(kinds["text"].counts) == reference.rows and kinds["text"].counts[-1] >= 1, "missing texts"
    assert any("text columns 'text'" in m for m in text_repo.progress)


def test_a_text_table_with_a_dense_family_is_exit_2_before_training(
    tmp_path: Any, text_repo: TextRepo
) -> None:
    with pytest.raises(
        BuildError, match="--families: unknown family 'hist_gb' for multiclass with text columns"
    ):
        run_build(BuildOptions(data=text_repo.csv, target="topic", out=tmp_path, families=["hist_gb"]))
    assert not any(tmp_path.iterdir())
