"""Shared fixtures: repositories of tiny real models, each built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from builders.build import BuildOptions
from tests.helpers import BuiltRepo, build_bundled, manifest_data

# The suite must pass or fail the same way on every run (CI lands a session only when it is green):
# property tests draw the same examples each time; `--hypothesis-profile=explore` searches afresh.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile("default")


@pytest.fixture
def manifest_dict() -> dict[str, Any]:
    """A fresh, valid manifest as plain data, for tests to break one field at a time."""
    return manifest_data()


@pytest.fixture(scope="session")
def iris_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepo:
    """Multiclass: iris, budget 2, tree and naive Bayes (plus the dummy baseline and logreg)."""
    out: Path = tmp_path_factory.mktemp("iris-repo")
    return build_bundled(
        BuildOptions(
            dataset="iris",
            out=out,
            budget=2,
            families=["tree", "naive_bayes"],
            cv_folds=3,
            learning_curves=False,
        )
    )


@pytest.fixture(scope="session")
def cancer_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepo:
    """Binary with costs: breast_cancer, a false negative five times as costly as a false positive."""
    out: Path = tmp_path_factory.mktemp("cancer-repo")
    return build_bundled(
        BuildOptions(
            dataset="breast_cancer",
            out=out,
            budget=2,
            families=["tree", "hist_gb", "naive_bayes"],
            fp_cost=1.0,
            fn_cost=5.0,
            cv_folds=3,
            learning_curves=False,
        )
    )


@pytest.fixture(scope="session")
def diabetes_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepo:
    """Regression: diabetes, budget 2, tree and kNN (plus ridge); the one build with learning curves."""
    out: Path = tmp_path_factory.mktemp("diabetes-repo")
    return build_bundled(
        BuildOptions(
            dataset="diabetes",
            out=out,
            budget=2,
            families=["tree", "knn"],
            cv_folds=3,
            learning_curves=True,
        )
    )
