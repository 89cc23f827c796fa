"""End to end: real builds (tiny budgets) written to disk, then read back as the service reads them.

Three repositories are built once per session (tests/conftest.py): iris (multiclass), breast_cancer
with false-positive / false-negative costs (binary), and diabetes with learning curves (regression).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from builders.build import BuildOptions, run_build
from builders.ensembles import independent_vote_accuracy
from builders.evaluated import Evaluated
from builders.scoring import classification_metrics, expected_cost, regression_metrics
from contract import combine as combiners
from contract.manifest import ROOT_MARKER, EnsembleSpec, ModelCard
from contract.verify import load_card, resolve_version, sha256_file, verify
from tests.helpers import BundledBuild, session_for

pytestmark = pytest.mark.slow

REPOS = ["iris_repo", "cancer_repo", "diabetes_repo"]
CLASSIFICATION_REPOS = ["iris_repo", "cancer_repo"]


@pytest.fixture(params=REPOS)
def repo(request: pytest.FixtureRequest) -> BundledBuild:
    built: BundledBuild = request.getfixturevalue(request.param)
    return built


@pytest.fixture(params=CLASSIFICATION_REPOS)
def classification_repo(request: pytest.FixtureRequest) -> BundledBuild:
    built: BundledBuild = request.getfixturevalue(request.param)
    return built


def _evaluated(repo: BundledBuild, name: str) -> Evaluated:
    return next(m for m in repo.result.models if m.name == name)


def _card(repo: BundledBuild, card_path: str) -> ModelCard:
    return load_card(repo.version_dir / card_path)


# --- what was written ----------------------------------------------------------------------------


def test_repository_layout_and_manifest(repo: BundledBuild) -> None:
    opts = repo.options
    assert repo.version_dir == opts.out / str(opts.dataset) / "1"
    assert (opts.out / ROOT_MARKER).is_file()
    assert resolve_version(opts.out) == repo.version_dir
    assert verify(repo.version_dir) == repo.result.manifest == repo.manifest
    assert not list(repo.version_dir.parent.glob(".staging-*"))
    # The reproduced test split is the build's own (the ensemble checks below rely on it).
    np.testing.assert_array_equal(repo.y_test, repo.result.facts.y_test)
    assert repo.manifest.dataset.source == f"sklearn:{opts.dataset}"


def test_expected_tasks_classes_and_members(repo: BundledBuild) -> None:
    m = repo.manifest
    expected = {
        "iris": (
            "multiclass",
            ["setosa", "versicolor", "virginica"],
            {"dummy", "logreg", "naive_bayes", "tree"},
        ),
        "breast_cancer": (
            "binary",
            ["benign", "malignant"],
            {"dummy", "logreg", "naive_bayes", "tree", "hist_gb"},
        ),
        "diabetes": ("regression", [], {"dummy", "ridge", "tree", "knn"}),
    }[str(repo.options.dataset)]
    assert (m.task, m.classes, {s.name for s in m.members}) == expected
    # Nothing was left out: every family exported and passed parity.
    assert [x.name for x in repo.result.models if x.excluded] == []


def test_every_member_passed_parity_and_has_a_card(repo: BundledBuild) -> None:
    for spec in repo.manifest.members:
        card = _card(repo, spec.card)
        assert card.name == spec.name and card.kind == "member"
        assert card.parity is not None and card.parity.passed, (spec.name, card.parity)
        assert card.parity.rows == len(repo.y_test)
        assert card.sha256 == spec.sha256 == sha256_file(repo.version_dir / spec.path)
        assert card.file_size_bytes == (repo.version_dir / spec.path).stat().st_size
        assert set(card.metrics) == {"validation", "test", "out_of_fold"}
        assert card.primary_metric == repo.manifest.primary_metric
        assert card.latency is not None and card.latency.onnx_single_row_us > 0
        assert card.dataset == repo.manifest.dataset
        assert "scikit-learn" in card.library_versions and "onnxruntime" in card.library_versions
        assert spec.outputs == (
            ["variable"] if repo.manifest.task == "regression" else ["label", "probabilities"]
        )


def test_every_family_got_the_same_budget(repo: BundledBuild) -> None:
    for spec in repo.manifest.members:
        search = _card(repo, spec.card).search
        assert search is not None
        assert (search.budget_trials, search.cv_folds, search.seed) == (2, 3, 0)
        # The dummy's search space has a single point, so it runs once.
        assert search.trials_run == (1 if spec.name == "dummy" else 2)


def test_ensembles_exist_with_consistent_definitions(repo: BundledBuild) -> None:
    ensembles = {e.name: e for e in repo.manifest.ensembles}
    if repo.manifest.task == "regression":
        assert {n: e.strategy for n, e in ensembles.items()} == {
            "mean": "mean",
            "weighted": "mean",
            "stack": "stack",
        }
    else:
        assert {n: e.strategy for n, e in ensembles.items()} == {
            "vote": "hard_vote",
            "average": "soft_average",
            "weighted": "soft_average",
            "stack": "stack",
        }
    members = ensembles["stack"].members
    assert "dummy" not in members
    if repo.manifest.task != "regression":
        assert len(members) % 2 == 1  # three qualified here, so the vote takes an odd count
    for ens in ensembles.values():
        assert ens.members == members
        card = _card(repo, ens.card)
        assert (card.kind, card.members, card.strategy, card.weights) == (
            "ensemble",
            members,
            ens.strategy,
            ens.weights,
        )
        assert card.parity is not None and card.parity.passed
    weights = ensembles["weighted"].weights
    assert weights is not None and sum(weights) == pytest.approx(1.0, abs=1e-5)
    stack = ensembles["stack"]
    assert stack.meta_model == "ensembles/stack/meta.onnx"
    assert stack.meta_sha256 == sha256_file(repo.version_dir / stack.meta_model)


def test_champion_and_shadows(repo: BundledBuild) -> None:
    routing = repo.manifest.routing
    assert routing.champion != "dummy"
    assert sorted([routing.champion, *routing.shadow]) == sorted(repo.manifest.variant_names())
    # judged on out-of-fold outputs over every labelled row but the test split, paired per row
    split = repo.result.facts.split_rows
    assert "out-of-fold (train + validation) " in routing.rule
    assert f"over {split['train'] + split['validation']} rows" in routing.rule
    assert "paired standard errors" in routing.rule
    if repo.manifest.task == "regression":
        assert "squared error" in routing.rule
    else:
        assert "log loss" in routing.rule
    assert repo.result.facts.champion == routing.champion


# --- reading it back: the stored ONNX files reproduce the build's numbers -------------------------


def test_members_read_from_disk_answer_as_in_the_build(repo: BundledBuild) -> None:
    names = [m.name for m in repo.manifest.members]
    for name, outputs in zip(names, repo.member_outputs(names), strict=True):
        built = _evaluated(repo, name).outputs["test"]
        if repo.manifest.task == "regression":
            np.testing.assert_allclose(np.ravel(outputs[0]), built.values, rtol=1e-6)
        else:
            np.testing.assert_array_equal(outputs[0], built.raw_labels)
            np.testing.assert_allclose(outputs[1], built.proba, atol=1e-6)


def _combine_from_disk(repo: BundledBuild, ens: EnsembleSpec) -> dict[str, npt.NDArray[Any]]:
    """What the service computes for an ensemble: member ONNX outputs, then the combiner."""
    outputs = repo.member_outputs(ens.members)
    task = repo.manifest.task
    if task == "regression":
        values = [o[0] for o in outputs]
        if ens.strategy == "stack":
            assert ens.meta_model is not None
            (pred,) = session_for(repo.version_dir / ens.meta_model).run(
                ["variable"], {"features": combiners.stack_features(values, task)}
            )
            return {"pred": np.ravel(pred)}
        return {"pred": combiners.mean(values, ens.weights)}
    if ens.strategy == "hard_vote":
        labels, shares = combiners.hard_vote([o[0] for o in outputs], len(repo.manifest.classes), ens.weights)
        return {"labels": labels, "proba": shares}
    if ens.strategy == "stack":
        assert ens.meta_model is not None
        labels, proba = session_for(repo.version_dir / ens.meta_model).run(
            ["label", "probabilities"], {"features": combiners.stack_features([o[1] for o in outputs], task)}
        )
    else:
        labels, proba = combiners.soft_average([o[1] for o in outputs], ens.weights)
    threshold = _card(repo, ens.card).decision_threshold
    if threshold is not None:
        labels = combiners.apply_threshold(proba, threshold)
    return {"labels": labels, "proba": proba}


def test_ensembles_recomputed_from_disk_reproduce_the_build(repo: BundledBuild) -> None:
    costs = repo.result.facts.costs
    for ens in repo.manifest.ensembles:
        ours = _combine_from_disk(repo, ens)
        built = _evaluated(repo, ens.name).outputs["test"]
        card = _card(repo, ens.card)
        if repo.manifest.task == "regression":
            np.testing.assert_allclose(ours["pred"], built.values, rtol=1e-6)
            metrics = regression_metrics(repo.y_test, ours["pred"])
        else:
            np.testing.assert_array_equal(ours["labels"], built.labels, err_msg=ens.name)
            np.testing.assert_allclose(ours["proba"], built.proba, atol=1e-6, err_msg=ens.name)
            n_classes = len(repo.manifest.classes)
            metrics = classification_metrics(repo.y_test, ours["proba"], ours["labels"], n_classes, costs)
        for key, value in card.metrics["test"].items():
            assert metrics[key] == pytest.approx(value, abs=2e-6), (ens.name, key)


def test_vote_against_independent_members(classification_repo: BundledBuild) -> None:
    repo = classification_repo
    info = repo.result.facts.vote_independence
    assert info is not None
    vote = next(e for e in repo.manifest.ensembles if e.name == "vote")
    accuracies = [_card(repo, f"members/{n}/card.json").metrics["test"]["accuracy"] for n in vote.members]
    assert info.members == vote.members
    assert info.member_accuracies == pytest.approx(accuracies, abs=1e-6)
    assert info.independent_accuracy == pytest.approx(independent_vote_accuracy(accuracies), abs=1e-5)
    assert info.measured_accuracy == pytest.approx(
        _card(repo, vote.card).metrics["test"]["accuracy"], abs=1e-6
    )


# --- costs, learning curves, report --------------------------------------------------------------


def test_cost_run_sets_decision_thresholds(cancer_repo: BundledBuild) -> None:
    repo = cancer_repo
    assert repo.result.facts.costs == (1.0, 5.0)
    cards = [m.card for m in repo.manifest.members] + [e.card for e in repo.manifest.ensembles]
    thresholds = {card.name: card.decision_threshold for card in (_card(repo, c) for c in cards)}
    # Probability-based models get a cost-chosen threshold; the baseline and the hard vote cannot.
    assert thresholds.pop("dummy") is None
    assert thresholds.pop("vote") is None
    assert all(t is not None and 0 < t < 1 for t in thresholds.values()), thresholds
    # A false negative costs 5x a false positive, so thresholds sit well below 0.5 on average.
    assert float(np.mean(list(thresholds.values()))) < 0.5
    for spec in repo.manifest.members:
        test = _card(repo, spec.card).metrics["test"]
        assert "cost" in test
    # The served labels of a thresholded member carry its cost.
    logreg = _evaluated(repo, "logreg").outputs["test"]
    assert _card(repo, "members/logreg/card.json").metrics["test"]["cost"] == pytest.approx(
        expected_cost(repo.y_test, logreg.labels, 1.0, 5.0), abs=1e-6
    )


def test_runs_without_costs_have_no_thresholds(iris_repo: BundledBuild) -> None:
    cards = [m.card for m in iris_repo.manifest.members] + [e.card for e in iris_repo.manifest.ensembles]
    for path in cards:
        card = _card(iris_repo, path)
        assert card.decision_threshold is None
        assert "cost" not in card.metrics["test"]


def test_learning_curves_when_asked(diabetes_repo: BundledBuild, iris_repo: BundledBuild) -> None:
    for spec in diabetes_repo.manifest.members:
        card = _card(diabetes_repo, spec.card)
        rows = [p.train_rows for p in card.learning_curve]
        assert len(rows) == 5 and rows == sorted(rows) and len(set(rows)) == 5, spec.name
        assert isinstance(card.still_improving, bool)
    assert (diabetes_repo.version_dir / "plots" / "learning_curves.png").is_file()
    for spec in iris_repo.manifest.members:
        card = _card(iris_repo, spec.card)
        assert card.learning_curve == [] and card.still_improving is None
    assert not (iris_repo.version_dir / "plots" / "learning_curves.png").exists()


def test_regression_stack_has_non_negative_member_weights(diabetes_repo: BundledBuild) -> None:
    stack = next(e for e in diabetes_repo.manifest.ensembles if e.name == "stack")
    params = _card(diabetes_repo, stack.card).hyperparameters
    assert params["meta_model"] == "LinearRegression"
    assert len(params["coefficients"]) == len(stack.members)
    assert all(c >= 0 for c in params["coefficients"])


def test_report_and_plots(repo: BundledBuild) -> None:
    vdir = repo.version_dir
    plots = {"pareto.png", "error_correlation.png"}
    plots.add("residuals.png" if repo.manifest.task == "regression" else "confusion_matrix.png")
    for rel in ["report.md", "report.html", *(f"plots/{p}" for p in plots)]:
        path = vdir / rel
        assert path.is_file() and path.stat().st_size > 0, rel
        assert rel in repo.manifest.files
    for png in plots:
        assert (vdir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (vdir / "report.md").read_text()
    html = (vdir / "report.html").read_text()
    assert markdown.startswith(f"# Offline report: {repo.manifest.name}")
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    for name in repo.manifest.variant_names():
        assert f"| {name}" in markdown, name
    assert f"★ champion: **{repo.manifest.routing.champion}**" in markdown
    assert "Equal search budget" in markdown and "ONNX parity" in markdown


def test_a_second_build_publishes_version_two(iris_repo: BundledBuild, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(iris_repo.options.out, root)
    result = run_build(
        BuildOptions(dataset="iris", out=root, budget=1, families=["tree"], cv_folds=2, learning_curves=False)
    )
    assert result.path == root / "iris" / "2"
    assert result.manifest.version == 2
    assert resolve_version(root) == result.path
    assert verify(root / "iris" / "1") == iris_repo.manifest
    assert verify(result.path).members[-1].name == "tree"
    report = (result.path / "report.md").read_text()
    assert "## Against version 1" in report and "the same table (same sha256)" in report
    v1 = load_card(root / "iris" / "1" / next(s.card for s in iris_repo.manifest.members if s.name == "tree"))
    row = next(line for line in report.splitlines() if line.startswith("| tree "))
    assert f"{v1.metrics['test']['accuracy']:.4f}" in row  # version 1's test score beside this one's
    assert "not in this build" in report  # version 1's naive_bayes and ensembles
    assert "## Against version" not in (root / "iris" / "1" / "report.md").read_text()


def test_halving_search_scores_three_times_the_candidates_and_is_reproducible(tmp_path: Path) -> None:
    """--search halving: every family gets 3x the trial budget in candidates (the same for all), most
    scored on a sample of the rows; the same seed picks the same configuration every time."""
    builds = [
        run_build(
            BuildOptions(
                dataset="breast_cancer", out=tmp_path / str(i), budget=3, families=["tree", "lightgbm"],
                search="halving", learning_curves=False,
            )
        )
        for i in range(2)
    ]  # fmt: skip
    for name in ("logreg", "tree", "lightgbm"):
        first, second = (next(m for m in b.models if m.name == name) for b in builds)
        assert first.search is not None and first.search.strategy == "halving"
        assert first.search.trials_run == first.search.budget_trials == 9, name
        assert first.hyperparameters == second.hyperparameters, name
    assert "9 (halving)" in (builds[0].path / "report.md").read_text()


def test_a_time_budget_runs_trials_in_a_fixed_order_until_each_familys_share_is_spent(tmp_path: Path) -> None:
    """--time-budget: split equally over the families; each runs at least one trial, in the seeded
    order, so only the number of trials depends on the machine; the card and report say how many."""
    from builders.search import cv_splitter, search

    opts = BuildOptions(
        dataset="iris", out=tmp_path, families=["tree", "knn"], time_budget_s=0.04, learning_curves=False
    )
    result = run_build(opts)
    records = {m.name: m.search for m in result.models if m.kind == "member"}
    for name, record in records.items():
        assert record is not None and record.budget_seconds == pytest.approx(0.01), name  # 4 families
        assert record.trials_run >= 1 and record.budget_trials == record.trials_run
    assert "budget (trials or seconds)" in (result.path / "report.md").read_text()

    # the same seed tries the same configurations first: a generous budget over a finite space
    # (kNN: 15 values of k) runs all of them and lands on the same best every time
    member = next(m for m in result.models if m.name == "knn")
    assert member.pipeline is not None
    from sklearn.base import clone

    from builders.families import CLASSIFIERS

    space = next(f for f in CLASSIFIERS if f.name == "knn").space
    from builders.context import load_table, prepare

    ctx = prepare(opts, load_table(opts))
    found = [
        search(clone(member.pipeline), space, ctx.x_train, ctx.y_train, task=ctx.task, budget=1,
               cv=cv_splitter(ctx.task, 3, 0), seed=0, n_jobs=1, seconds=60.0)
        for _ in range(2)
    ]  # fmt: skip
    assert found[0][1] == found[1][1] and found[0][2].trials_run == found[1][2].trials_run == 15


def test_members_serve_the_refit_on_train_and_validation(repo: BundledBuild) -> None:
    """Every labelled row but the test split trains what serves; the card says so, and the validation
    metrics stay those of the train-only fit the choices were made on."""
    split = repo.result.facts.split_rows
    tree = _evaluated(repo, "tree")
    assert tree.pipeline is not None
    assert tree.pipeline[-1].tree_.n_node_samples[0] == split["train"] + split["validation"]
    spec = next(s for s in repo.manifest.members if s.name == "tree")
    card = _card(repo, spec.card)
    assert card.trained_on == "train+validation"
    assert card.metrics["validation"] == pytest.approx(
        {k: round(v, 6) for k, v in tree.metrics["validation"].items()}
    )


def test_no_refit_serves_the_train_only_fit(tmp_path: Path) -> None:
    result = run_build(
        BuildOptions(
            dataset="iris", out=tmp_path, budget=1, families=["tree"], learning_curves=False, refit=False
        )
    )
    tree = next(m for m in result.models if m.name == "tree")
    assert tree.trained_on == "train" and tree.pipeline is not None
    assert tree.pipeline[-1].tree_.n_node_samples[0] == result.facts.split_rows["train"]
