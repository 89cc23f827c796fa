"""The search on a Dask cluster (builders/distributed.py): a two-worker local cluster gives the same
leaderboard as the same seed without one, and a scheduler that does not answer is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builders.build import BuildOptions, run_build
from builders.errors import BuildError


def _board(out: Path, **kw: Any) -> dict[str, tuple[Any, ...]]:
    result = run_build(
        BuildOptions(
            dataset="iris",
            out=out,
            budget=3,
            families=["tree", "logreg", "knn"],
            learning_curves=True,
            seed=3,
            **kw,
        )
    )
    return {
        m.name: (
            m.search.best_cv_score if m.search else None,
            tuple(sorted(m.hyperparameters.items())),
            tuple(sorted(m.metrics.get("test", {}).items())),
            tuple(p.score for p in m.learning_curve),
        )
        for m in result.models
    }


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_same_leaderboard(tmp_path: Path) -> None:
    alone = _board(tmp_path / "alone")
    on_dask = _board(tmp_path / "dask", dask_local=2)
    assert on_dask == alone
    assert len(alone) >= 5  # members and ensembles


def test_a_scheduler_that_does_not_answer_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"--dask-scheduler tcp://127.0.0.1:9: cannot connect"):
        run_build(BuildOptions(dataset="iris", out=tmp_path, budget=1, dask_scheduler="tcp://127.0.0.1:9"))
    assert not list(tmp_path.iterdir()), "nothing written"


def _everything_but_timing(out: Path) -> dict[str, Any]:
    result = run_build(
        BuildOptions(
            dataset="breast_cancer",
            out=out,
            budget=3,
            families=["tree", "logreg", "knn", "lightgbm", "xgboost", "hist_gb"],
            learning_curves=False,
            seed=1,
        )
    )
    models = {
        m.name: (
            m.excluded,
            tuple(m.members),
            m.weights,
            m.threshold,
            tuple(sorted((k, str(v)) for k, v in m.hyperparameters.items())),
            tuple(sorted((s, tuple(sorted(d.items()))) for s, d in m.metrics.items())),
        )
        for m in result.models
    }
    return {
        "models": models,
        "champion": result.manifest.routing.champion,
        "rule": result.manifest.routing.rule,
    }


@pytest.mark.slow
def test_the_same_table_and_seed_build_the_same_on_a_busy_machine(tmp_path: Path) -> None:
    """Members, hyperparameters, ensembles, metrics and the champion of a quiet build and of one with
    both cores kept busy by other processes are equal: only timing columns may differ."""
    import subprocess
    import sys

    quiet = _everything_but_timing(tmp_path / "quiet")
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy = _everything_but_timing(tmp_path / "busy")
    finally:
        for p in burners:
            p.kill()
            p.wait()
    assert busy == quiet
