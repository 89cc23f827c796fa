"""Replay, drift, `gateway compare` and `gateway demo` against real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from cli.main import main
from cli.replay.client import run
from cli.replay.command import make_plan
from cli.replay.traffic import fetch_schema
from tests.helpers import (
    ROOT,
    BuiltRepo,
    BundledBuild,
    Server,
    TextRepo,
    free_port,
    start_server,
    stop_server,
)


@pytest.fixture(scope="module")
def table(built_repo: BuiltRepo) -> pd.DataFrame:
    return pd.read_csv(built_repo.csv)


@pytest.mark.slow
@pytest.mark.parametrize("oip", [False, True])
def test_replay_posts_delayed_labels_and_compares(server: Server, table: pd.DataFrame, oip: bool) -> None:
    schema = fetch_schema(server.url)
    plan = make_plan(
        table,
        schema,
        "target",
        rows=80,
        routing_key=None,
        drift_spec="scale:age:1.5",
        drift_after=0.5,
        jitter=0.0,
        seed=0,
    )
    assert len(plan.records) == 80
    started = time.monotonic()
    stats = asyncio.run(
        run(
            server.url,
            plan,
            schema,
            rps=200,
            duration=None,
            label_delay=0.3,
            label_fraction=0.5,
            oip=oip,
            seed=0,
        )
    )
    assert time.monotonic() - started < 30
    assert stats.answered == 80 and not stats.errors
    assert 20 <= stats.labels_posted <= 60 and stats.labels_joined == stats.labels_posted
    doc = httpx.get(f"{server.url}/compare", timeout=30).json()
    assert doc["labelled_rows"] >= stats.labels_joined


def test_replay_against_a_dead_server_counts_failures_and_ends(
    table: pd.DataFrame, built_repo: BuiltRepo
) -> None:
    from cli.replay.traffic import Schema
    from contract.verify import load_manifest

    m = load_manifest(built_repo.version)
    schema = Schema(
        model=m.name,
        task=m.task,
        classes=m.classes,
        inputs=[{"name": c.name, "kind": c.kind} for c in m.inputs],
    )
    plan = make_plan(
        table,
        schema,
        "target",
        rows=20,
        routing_key=None,
        drift_spec=None,
        drift_after=0.5,
        jitter=0.0,
        seed=0,
    )
    started = time.monotonic()
    stats = asyncio.run(
        run(
            f"http://127.0.0.1:{free_port()}",
            plan,
            schema,
            rps=100,
            duration=None,
            label_delay=0.1,
            label_fraction=1.0,
            oip=False,
        )
    )
    assert stats.errors["refused"] == 20 and stats.answered == 0
    assert time.monotonic() - started < 15


def test_compare_cli_prints_tables(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert "Offline vs online" in out and "verdict" in out
    assert main(["compare", "--url", f"http://127.0.0.1:{free_port()}"]) == 2


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builders.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("demo") / "models"
    run_build(
        BuildOptions(
            dataset="breast_cancer",
            out=out,
            budget=1,
            families=["tree", "naive_bayes"],
            learning_curves=False,
        )
    )
    return out


def _demo(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "demo",
            "--out",
            str(out),
            "--rows",
            "200",
            "--rps",
            "200",
            "--label-delay",
            "0.2",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_demo_rebuilds_instead_of_serving_a_repository_it_cannot_load(
    demo_repo: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from cli.demo import servable_version

    assert servable_version(tmp_path / "nothing") == (None, "")
    version, problem = servable_version(demo_repo / "breast_cancer")
    assert version is not None and problem == ""
    old = tmp_path / "models"
    shutil.copytree(demo_repo, old)
    manifest = old / "breast_cancer" / version.name / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"format_version": 1}))
    version, problem = servable_version(old / "breast_cancer")
    assert version is None
    assert "format_version 1" in problem and "rebuild" in problem


@pytest.mark.slow
def test_demo_runs_end_to_end(demo_repo: Path) -> None:
    proc = _demo(demo_repo, "--no-prometheus")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "Offline winner:" in out and "Where to look" in out


@pytest.mark.slow
def test_demo_ctrl_c_stops_everything_it_started(demo_repo: Path) -> None:
    port = free_port()
    proc = _demo(demo_repo, "--no-prometheus", "--keep-running", "--port", str(port))
    deadline = time.monotonic() + 240
    lines: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "servers keep running" in line:
            break
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200, "".join(lines)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)


def test_replay_cli_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    csv = tmp_path / "t.csv"
    pd.DataFrame({"age": [1.0], "target": ["stay"]}).to_csv(csv, index=False)
    assert main(["replay", "--url", server.url, "--data", str(csv), "--rows", "5"]) == 2
    assert "monthly income" in capsys.readouterr().err
    assert main(["replay", "--url", server.url, "--data", str(tmp_path / "none.csv")]) == 2
    assert main(["replay", "--url", f"http://127.0.0.1:{free_port()}", "--data", str(csv)]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert main(["replay", "--url", server.url, "--data", str(csv), "--rps", "0"]) == 2


@pytest.mark.slow
def test_replay_drift_spec_moves_only_the_columns_it_touches(
    built_repo: BuiltRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway replay --drift shift:age:15` on a fresh server: /drift calls age drifted and leaves the
    untouched columns stable; the replay's end summary prints the drift table."""
    srv = start_server(
        built_repo.root, tmp_path / "bentoml.log", extra_env={"GATEWAY_DRIFT_FLUSH_INTERVAL_S": "0.2"}
    )
    try:
        code = main(
            [
                "replay",
                "--url",
                srv.url,
                "--data",
                str(built_repo.csv),
                "--rows",
                "600",
                "--rps",
                "500",
                "--label-delay",
                "0.1",
                "--drift",
                "shift:age:15",
                "--drift-after",
                "0",
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        doc = httpx.get(f"{srv.url}/drift", timeout=30).json()
    finally:
        stop_server(srv)
    assert doc["rows"] == 600, doc
    columns = {c["column"]: c for c in doc["columns"]}
    assert doc["drifted"] == ["age"], columns
    assert columns["age"]["psi"] >= 0.25 and columns["age"]["p_value"] < 1e-6
    for name in set(columns) - {"age"}:
        assert columns[name]["status"] == "stable", columns[name]
        assert columns[name]["p_value"] > 1e-3, columns[name]
    assert "Input drift" in out and "drifted (PSI >= 0.25): age" in out, out


@pytest.mark.slow
def test_replay_sends_text_rows_and_joins_their_labels(
    text_repo: TextRepo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    srv = start_server(text_repo.root, tmp_path_factory.mktemp("text-server") / "bentoml.log")
    try:
        table = pd.read_csv(text_repo.csv)
        schema = fetch_schema(srv.url)
        assert [c["kind"] for c in schema.inputs] == ["numeric", "categorical", "text"]
        plan = make_plan(
            table,
            schema,
            "topic",
            rows=60,
            routing_key=None,
            drift_spec=None,
            drift_after=0.5,
            jitter=0.0,
            seed=0,
        )
        assert all(isinstance(r["text"], str | None) for r in plan.records)
        for oip in (False, True):
            stats = asyncio.run(
                run(
                    srv.url,
                    plan,
                    schema,
                    rps=200,
                    duration=None,
                    label_delay=0.2,
                    label_fraction=1.0,
                    oip=oip,
                    seed=0,
                )
            )
            assert stats.answered == 60 and not stats.errors
            assert stats.labels_posted == stats.labels_joined == 60
        doc = httpx.get(f"{srv.url}/compare", timeout=30).json()
        assert doc["labelled_rows"] == 120
        assert {m["model"] for m in doc["models"]} >= {"complement_nb", "linear_svm", "logreg"}
    finally:
        stop_server(srv)


@pytest.mark.slow
def test_replay_of_a_detector_joins_labels_and_compares_detection(
    anomaly_repo: BundledBuild, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from builders.data import load_wbc_outliers

    srv = start_server(
        anomaly_repo.version_dir.parent.parent, tmp_path_factory.mktemp("anomaly") / "bentoml.log"
    )
    try:
        table = load_wbc_outliers()
        schema = fetch_schema(srv.url)
        assert schema.classes == ["benign", "malignant"]
        plan = make_plan(
            table,
            schema,
            "diagnosis",
            rows=150,
            routing_key=None,
            drift_spec=None,
            drift_after=0.5,
            jitter=0.0,
            seed=0,
        )
        stats = asyncio.run(
            run(
                srv.url,
                plan,
                schema,
                rps=300,
                duration=None,
                label_delay=0.2,
                label_fraction=1.0,
                oip=False,
                seed=0,
            )
        )
        assert stats.answered == 150 and not stats.errors and stats.labels_joined == 150
        doc = httpx.get(f"{srv.url}/compare", timeout=30).json()
        assert doc["labelled_rows"] == 150
        for m in doc["models"]:
            assert m["detection"]["n"] == 150 and m["detection"]["positives"] == plan.labels.count(
                "malignant"
            )
    finally:
        stop_server(srv)
