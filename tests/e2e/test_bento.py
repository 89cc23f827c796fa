"""`bentoml build` works offline from bentofile.yaml, carries no training dependencies, and serves."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.procs import Managed, free_port
from tests.helpers import ROOT, BuiltRepo

pytestmark = pytest.mark.slow


def test_bento_builds_offline_and_serves(
    built_repo: BuiltRepo, tmp_path: Path, feature_records: list[dict[str, Any]]
) -> None:
    project = tmp_path / "project"
    for package in ("contract", "service", "builders", "cli"):  # the bentofile picks what serves
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "bentofile.yaml", project)
    shutil.copytree(built_repo.version, project / "models" / "churn" / "1")
    (project / "models" / "repository.json").write_text('{"format_version": 1}\n')
    bentoml = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "bentoml")
    if not Path(bentoml).exists():
        bentoml = shutil.which("bentoml") or "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run(
        [bentoml, "build"], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    assert build.returncode == 0, build.stdout + build.stderr
    bento_dirs = list((tmp_path / "home" / "bentos" / "ensemble_gateway").glob("*/"))
    src = next(d for d in bento_dirs if (d / "src").is_dir())
    requirements = (src / "env" / "python" / "requirements.txt").read_text().lower()
    assert "onnxruntime" in requirements
    listed = {line.split("==")[0].strip() for line in requirements.splitlines() if line.strip()}
    assert not listed & {"scikit-learn", "skl2onnx", "onnx", "pandas", "pyarrow", "rich", "httpx", "psutil"}
    assert (src / "src" / "contract" / "manifest.py").is_file()
    assert (src / "src" / "service" / "recording" / "evaluator.py").is_file()
    assert not (src / "src" / "builders").exists() and not (src / "src" / "cli").exists()

    port = free_port()
    server = Managed(
        "bento",
        [bentoml, "serve", "ensemble_gateway:latest", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "bento.log",
        env={**env, "GATEWAY_LEDGER_PATH": str(tmp_path / "ledger.sqlite")},
        cwd=tmp_path,
    )
    try:
        server.wait_http(f"http://127.0.0.1:{port}/readyz", 90)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": feature_records[:2]}, timeout=10)
        assert r.status_code == 200, r.text
        assert httpx.get(f"http://127.0.0.1:{port}/models", timeout=10).json()["model"] == "churn"
    finally:
        server.stop()
