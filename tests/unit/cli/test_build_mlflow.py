"""`gateway build --mlflow`: each build is a parent run (options, champion metrics, report, manifest)
with one nested run per model (hyperparameters, trials, metrics, ONNX graph and card), read back
through MLflow's own client from a real SQLite store; a bad URI exits 2 before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from contract.verify import load_card, load_manifest, resolve_version

mlflow = pytest.importorskip("mlflow")

BUILD = ["build", "--dataset", "iris", "--families", "tree", "knn", "--budget", "2", "--no-learning-curves"]


def test_a_build_is_logged_with_a_run_per_model(tmp_path: Path) -> None:
    out = tmp_path / "models"
    assert main([*BUILD, "--out", str(out), "--mlflow"]) == 0
    assert main([*BUILD, "--out", str(out), "--mlflow"]) == 0  # a second version, a second parent run
    version = resolve_version(out / "iris")
    manifest = load_manifest(version)
    uri = f"sqlite:///{(out / '.mlflow' / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("gateway/iris")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["gateway.version"] for r in parents) == ["1", "2"]
    latest = next(r for r in parents if r.data.tags["gateway.version"] == "2")
    assert latest.data.params["budget"] == "2" and latest.data.params["dataset"] == "iris"
    assert latest.data.tags["gateway.champion"] == manifest.routing.champion
    champion_spec = next(
        (m.card for m in manifest.members if m.name == manifest.routing.champion),
        next((e.card for e in manifest.ensembles if e.name == manifest.routing.champion), None),
    )
    assert champion_spec is not None
    card = load_card(version / champion_spec)
    assert latest.data.metrics["champion.test.accuracy"] == pytest.approx(card.metrics["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"report.md", "report.html", "manifest.json", "plots"} <= artifacts

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == latest.info.run_id]
    names = {m.name for m in manifest.members} | {e.name for e in manifest.ensembles}
    assert {r.info.run_name for r in children} == names
    knn = next(r for r in children if r.info.run_name == "knn")
    knn_card = load_card(version / next(m.card for m in manifest.members if m.name == "knn"))
    assert knn.data.params["hp.n_neighbors"] == str(knn_card.hyperparameters["n_neighbors"])
    assert knn.data.metrics["search.trials_run"] == 2
    assert "out_of_fold.accuracy" in knn.data.metrics
    assert {a.path for a in client.list_artifacts(knn.info.run_id)} == {"model.onnx", "card.json"}
    # the logged graph is the served one, byte for byte
    local = client.download_artifacts(knn.info.run_id, "model.onnx", str(tmp_path))
    assert Path(local).read_bytes() == (version / "members" / "knn" / "model.onnx").read_bytes()
    assert json.loads((out / "repository.json").read_text())  # the store sits beside, not in, the models


@pytest.mark.parametrize("uri", ["nonsense", "http://127.0.0.1:9"])
def test_a_bad_tracking_uri_exits_2_before_anything_is_written(
    tmp_path: Path, uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    assert main([*BUILD, "--out", str(out), "--mlflow", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway build: error: --mlflow: ") and err.count("\n") == 1
    assert not out.exists()
