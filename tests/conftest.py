"""Fixtures shared by every level: repositories of tiny real models (each built once per session),
settings, an in-process gateway and its Starlette app. tests/e2e/conftest.py adds real servers.

Levels: tests/unit (no server, no process), tests/integration (the gateway and its app in-process),
tests/e2e (real `bentoml serve`, real Prometheus). Helpers live in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings as hypothesis_settings

from builders.build import BuildOptions
from service.core.gateway import Gateway
from service.settings import Settings
from tests.helpers import (
    ADMIN_TOKEN,
    BuiltRepo,
    BundledBuild,
    HeldOut,
    TextRepo,
    build_bundled,
    churn_frame,
    fortune_frame,
    manifest_data,
    to_records,
)
from tests.postgres import PostgresCluster

# The suite must pass or fail the same way on every run (CI lands a session only when it is green):
# property tests draw the same examples each time; `--hypothesis-profile=explore` searches afresh.
hypothesis_settings.register_profile("default", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False, max_examples=500)
hypothesis_settings.load_profile("default")


@pytest.fixture
def manifest_dict() -> dict[str, Any]:
    """A fresh, valid manifest as plain data, for tests to break one field at a time."""
    return manifest_data()


@pytest.fixture(scope="session")
def iris_repo(tmp_path_factory: pytest.TempPathFactory) -> BundledBuild:
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
def cancer_repo(tmp_path_factory: pytest.TempPathFactory) -> BundledBuild:
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
def diabetes_repo(tmp_path_factory: pytest.TempPathFactory) -> BundledBuild:
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


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepo:
    """The service tests' repository: a churn-like mixed table (numeric and text columns, missing
    values), binary with FP/FN costs, tree, naive Bayes and HistGradientBoosting."""
    from builders.build import run_build

    base = tmp_path_factory.mktemp("svc")
    csv = base / "churn.csv"
    churn_frame().to_csv(csv, index=False)
    result = run_build(
        BuildOptions(
            data=csv,
            target="target",
            out=base / "models",
            name="churn",
            budget=2,
            families=["tree", "naive_bayes", "hist_gb"],
            fp_cost=1.0,
            fn_cost=3.0,
            learning_curves=False,
        )
    )
    return BuiltRepo(root=base / "models", version=result.path, csv=csv)


@pytest.fixture(scope="session")
def anomaly_repo(tmp_path_factory: pytest.TempPathFactory) -> BundledBuild:
    """Anomaly detection: wbc_outliers (357 benign, 21 malignant), every detector, budget 2."""
    out: Path = tmp_path_factory.mktemp("anomaly-repo")
    return build_bundled(BuildOptions(dataset="wbc_outliers", out=out, budget=2, learning_curves=False))


@pytest.fixture(scope="session")
def unlabelled_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepo:
    """Anomaly detection without labels: wbc_outliers' features alone, every detector's defaults."""
    from builders.build import run_build
    from builders.data import load_wbc_outliers

    base = tmp_path_factory.mktemp("unlabelled")
    csv = base / "wbc_nolabels.csv"
    load_wbc_outliers().drop(columns=["diagnosis"]).to_csv(csv, index=False)
    result = run_build(BuildOptions(data=csv, task="anomaly", out=base / "models", contamination=0.06))
    return BuiltRepo(root=base / "models", version=result.path, csv=csv)


@pytest.fixture(scope="session")
def text_repo(tmp_path_factory: pytest.TempPathFactory) -> TextRepo:
    """Text classification: fortunes of three topics beside a numeric and a categorical column, every
    family of the text field (dummy, logreg, complement_nb, linear_svm), budget 2."""
    from builders.build import run_build

    base = tmp_path_factory.mktemp("text")
    csv = base / "fortunes.csv"
    fortune_frame().to_csv(csv, index=False)
    messages: list[str] = []
    result = run_build(
        BuildOptions(
            data=csv, target="topic", out=base / "models", name="fortunes", budget=2, learning_curves=False
        ),
        progress=messages.append,
    )
    return TextRepo(root=base / "models", version=result.path, csv=csv, progress=messages)


@pytest.fixture(scope="session")
def held_out(built_repo: BuiltRepo) -> HeldOut:
    from builders import data as data_mod
    from builders.build import split_table

    frame = pd.read_csv(built_repo.csv)
    table = data_mod.prepare(frame, "target", "auto", "churn", str(built_repo.csv), "0" * 64)
    _, _, x_test, _, _, y_test = split_table(table, seed=0)
    records = to_records(x_test.rename(columns={c.tensor: c.name for c in table.columns}))
    return HeldOut(records, np.asarray(y_test))


@pytest.fixture(scope="session")
def feature_records(built_repo: BuiltRepo) -> list[dict[str, Any]]:
    frame = pd.read_csv(built_repo.csv).drop(columns=["target", "row_id"])
    return to_records(frame)


@pytest.fixture
def settings(built_repo: BuiltRepo, tmp_path: Path) -> Settings:
    """Gateway settings for in-process tests: shadow work and ledger writes on threads of this process
    (tests about the evaluator process ask for it)."""
    return Settings(
        repository=built_repo.root,
        admin_token=ADMIN_TOKEN,
        max_batch_rows=64,
        max_body_bytes=64_000,
        ledger_path=tmp_path / "ledger.sqlite",
        ledger_flush_interval_s=0.05,
        evaluator_process=False,
    )


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings)
    gw.load()
    yield gw
    gw.close()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[Any]:
    """The gateway's Starlette app in-process (no BentoML): the fast level of HTTP tests."""
    from starlette.testclient import TestClient

    from service.http.app import build_app

    with TestClient(build_app(gateway), base_url="http://gateway") as c:
        yield c


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster for the session (tests/postgres.py); each test takes a
    database of its own from it (``pg_url``)."""
    cluster = PostgresCluster(tmp_path_factory.mktemp("postgres"))
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A new, empty PostgreSQL database for this test; its URL."""
    import uuid

    return postgres.create_database(f"ledger_{uuid.uuid4().hex[:12]}")
