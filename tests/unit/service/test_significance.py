"""The comparison's statistics, checked by simulation and by hand."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.stats.significance import (
    accuracy_interval,
    holm,
    kendall,
    mcnemar,
    mcnemar_labels_needed,
    paired_errors_test,
    rmse_interval,
    verdict,
)


def paired_outcomes(
    rng: np.random.Generator, n: int, p_champion: float, p_challenger: float, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of two models on the same rows; with probability rho they share the row's difficulty."""
    u = rng.random(n)
    shared = rng.random(n) < rho
    v = np.where(shared, u, rng.random(n))
    return u < p_champion, v < p_challenger


def classification_verdict(champion: np.ndarray, challenger: np.ndarray) -> str:
    b, c, p = mcnemar(champion, challenger)
    return verdict(
        challenger.mean() > champion.mean(), p, len(champion), mcnemar_labels_needed(b, c, len(champion))
    )


def test_truly_better_challenger_is_found() -> None:
    rng = np.random.default_rng(1)
    found = [classification_verdict(*paired_outcomes(rng, 1500, 0.80, 0.85, 0.5)) for _ in range(200)]
    power = np.mean([v == "challenger is better" for v in found])
    assert power >= 0.85, power
    assert not any(v == "challenger is worse" for v in found)


def test_equal_models_rarely_called_better() -> None:
    rng = np.random.default_rng(2)
    found = [classification_verdict(*paired_outcomes(rng, 500, 0.80, 0.80, 0.5)) for _ in range(400)]
    false_better = np.mean([v == "challenger is better" for v in found])
    assert false_better <= 0.05, false_better


def test_regression_paired_test_finds_lower_errors_and_respects_size() -> None:
    rng = np.random.default_rng(3)
    hits, false_hits = 0, 0
    for _ in range(200):
        base = rng.normal(0, 1, 800)
        champion = np.abs(base + rng.normal(0, 0.5, 800))
        better = np.abs(0.85 * base + rng.normal(0, 0.5, 800))
        same = np.abs(base + rng.normal(0, 0.5, 800))
        _, p, _ = paired_errors_test(champion, better)
        hits += p < 0.05
        _, p0, _ = paired_errors_test(champion, same)
        false_hits += p0 < 0.05
    assert hits / 200 >= 0.85
    assert false_hits / 200 <= 0.08


def test_mcnemar_by_hand() -> None:
    champion = np.array([True] * 10 + [False] * 2 + [True] * 5)
    challenger = np.array([False] * 10 + [True] * 2 + [True] * 5)
    b, c, p = mcnemar(champion, challenger)
    assert (b, c) == (10, 2)
    # Exact binomial: P(X <= 2 or X >= 10 | n=12, 0.5) = 2 * (1 + 12 + 66) / 4096
    assert p == pytest.approx(2 * 79 / 4096)


def test_labels_needed_and_verdict_words() -> None:
    assert mcnemar_labels_needed(10, 10, 100) is None
    needed = mcnemar_labels_needed(20, 30, 200)
    assert needed is not None and needed > 200
    assert "more labels" in verdict(True, 0.3, 200, needed)
    assert verdict(True, 0.01, 200, needed) == "challenger is better"
    assert verdict(False, 0.01, 200, needed) == "challenger is worse"
    assert verdict(None, None, 0, None).startswith("no labelled rows")


def test_holm_by_hand() -> None:
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_holm_properties(ps: list[float]) -> None:
    adjusted = holm(ps)
    for raw, adj in zip(ps, adjusted, strict=True):
        assert adj is not None and raw <= adj + 1e-12 <= 1 + 1e-12
    order = np.argsort(ps, kind="stable")
    adj_sorted = [adjusted[i] for i in order]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(adj_sorted))


@given(st.integers(1, 5000), st.data())
@settings(max_examples=60, deadline=None)
def test_accuracy_interval_contains_estimate(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    iv = accuracy_interval(k, n)
    assert iv.low is not None and iv.high is not None and iv.value is not None
    assert 0 <= iv.low <= iv.value <= iv.high <= 1


def test_rmse_interval_covers_truth_in_simulation() -> None:
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(300):
        iv = rmse_interval(rng.normal(0, 2.0, 400))
        assert iv.low is not None and iv.high is not None
        covered += iv.low <= 2.0 <= iv.high
    assert 0.9 <= covered / 300 <= 0.99


def test_kendall() -> None:
    tau, _ = kendall([1, 2, 3, 4], [1, 2, 3, 4])
    assert tau == pytest.approx(1.0)
    tau, _ = kendall([1, 2, 3, 4], [4, 3, 2, 1])
    assert tau == pytest.approx(-1.0)
    assert kendall([1, 2], [1, 2]) == (None, None)


def test_labelled_rows_outcomes_incremental_and_per_variant(tmp_path: Path) -> None:
    """Regression errors and classification correctness per variant, read in two steps, a variant
    missing on some rows (shadow sampled), another model version ignored, a recreated ledger re-read."""
    import orjson

    from service.ledger.database import Database
    from service.ledger.reads import LabelledRows

    def fill(path: Path, task_rows: list[tuple[str, int, dict[str, list[Any]]]]) -> Any:
        conn = Database(path)
        for rid, version, doc in task_rows:
            conn.execute(
                "INSERT INTO predictions VALUES (?,?,?,?,?,?,?)",
                (rid, 0, "m", version, "a", 0.0, orjson.dumps(doc).decode()),
            )
        return conn

    conn = fill(
        tmp_path / "reg.sqlite",
        [
            ("r1", 1, {"a": [None, 2.0, "s"], "b": [None, 3.5, "h"]}),
            ("r2", 1, {"a": [None, -1.0, "s"]}),
            ("r3", 2, {"a": [None, 9.0, "s"]}),
            ("r4", 1, {"a": [None, 0.5, "s"], "b": [None, 0.0, "h"]}),
        ],
    )
    reader = LabelledRows("m", 1, regression=True)
    conn.execute("INSERT INTO labels VALUES ('r1', 0, NULL, 1.0, 0)")
    conn.execute("INSERT INTO labels VALUES ('r3', 0, NULL, 1.0, 0)")
    first = reader.update(conn)
    assert first["a"][1].tolist() == [1.0] and first["b"][1].tolist() == [2.5]
    conn.execute("INSERT INTO labels VALUES ('r2', 0, NULL, 0.0, 0)")
    conn.execute("INSERT INTO labels VALUES ('r4', 0, NULL, 1.0, 0)")
    data = reader.update(conn)
    assert reader.rows == 3, "version 2's row is not this version's"
    assert data["a"][1].tolist() == [1.0, -1.0, -0.5] and data["b"][1].tolist() == [2.5, -1.0]
    assert set(data["b"][0].tolist()) < set(data["a"][0].tolist()), "b answered only some rows"
    assert data["a"][1].dtype == np.float64

    conn = fill(tmp_path / "cls.sqlite", [("c1", 1, {"a": [1, 0.9, "s"], "b": [0, 0.2, "h"]})])
    conn.execute("INSERT INTO labels VALUES ('c1', 0, 1, NULL, 0)")
    cls = LabelledRows("m", 1, regression=False).update(conn)
    assert cls["a"][1].tolist() == [True] and cls["b"][1].tolist() == [False]
    # The same reader pointed at a fresh file (fewer labels than it has seen) starts again.
    reader.last_rowid = 99
    assert reader.update(Database(tmp_path / "reg.sqlite"))["a"][1].tolist() == [1.0, -1.0, -0.5]
