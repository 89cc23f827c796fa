"""A real `bentoml serve` process: JSON API, bad input, the standard tritonclient, and start-up checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers import ROOT, BuiltRepo, Server

pytestmark = pytest.mark.slow


def test_ready_and_predict(server: Server, feature_records: list[dict[str, Any]]) -> None:
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    r = httpx.post(f"{server.url}/predict", json={"records": feature_records[:3]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3


def test_bad_input_never_5xx_and_server_keeps_serving(
    server: Server, feature_records: list[dict[str, Any]]
) -> None:
    bad_bodies = [
        b"{",
        b"[]",
        b"",
        b'{"records": [1]}',
        b'{"records": [{}]}',
        b"\xff\xfe",
        b'{"records": [{"age": NaN}]}',
    ]
    for body in bad_bodies:
        r = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert "error" in r.json()
    r = httpx.post(f"{server.url}/v2/models/ghost/infer", content=b"{}")
    assert r.status_code == 404
    assert httpx.post(f"{server.url}/predict", json={"records": feature_records[:1]}).status_code == 200


def test_tritonclient_binary_and_json(
    server: Server, built_repo: BuiltRepo, feature_records: list[dict[str, Any]]
) -> None:
    import tritonclient.http as triton

    from contract.verify import load_manifest

    manifest = load_manifest(built_repo.version)
    rows = [r for r in feature_records if all(v is not None for v in r.values())][:4]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(manifest.name)
    meta = client.get_model_metadata(manifest.name)
    assert [i["name"] for i in meta["inputs"]] == [c.name for c in manifest.inputs]
    for binary in (True, False):
        inputs = []
        for c in manifest.inputs:
            values = [r[c.name] for r in rows]
            if c.kind == "numeric":
                arr = np.asarray(values, dtype=np.float32).reshape(-1, 1)
                inp = triton.InferInput(c.name, list(arr.shape), "FP32")
            else:
                arr = np.asarray(values, dtype=object).reshape(-1, 1)
                inp = triton.InferInput(c.name, list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(inp)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer(manifest.name, inputs, request_id=f"triton-{binary}", outputs=outputs)
        proba = result.as_numpy("probabilities")
        assert proba.shape == (4, len(manifest.classes))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").ravel()]
        assert set(labels) <= {str(c) for c in manifest.classes}
        assert result.get_response()["id"] == f"triton-{binary}"
    # No outputs named: tritonclient asks for binary outputs of everything.
    result = client.infer("stack", inputs)
    assert result.as_numpy("label_index").shape == (4,)
    client.close()


def _serve(repository: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository), "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_refuses_a_tampered_repository(built_repo: BuiltRepo, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(built_repo.version, copy)
    onnx_file = next((copy / "members").glob("*/model.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes() + b"x")
    proc = _serve(copy)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256 mismatch" in lines[0] and str(onnx_file) in lines[0]


def test_serve_refuses_an_invalid_manifest(built_repo: BuiltRepo, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(built_repo.version, copy)
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"task": "binary"', '"task": "ranking"'))
    proc = _serve(copy)
    assert proc.returncode == 2 and "manifest.json: invalid manifest at task" in proc.stderr
