"""/compare?against=N: the live version beside an earlier one of the same repository, offline cards
side by side and online results where the ledger holds labelled rows of both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from starlette.testclient import TestClient

from cli.compare import render
from service.core.gateway import Gateway
from service.http.app import build_app
from service.settings import Settings
from tests.helpers import ADMIN_TOKEN, BuiltRepo

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def two_versions(built_repo: BuiltRepo, tmp_path: Path) -> Path:
    """A repository root holding the churn model at versions 1 and 2 (2: the same models again)."""
    root = tmp_path / "models"
    model = root / built_repo.version.parent.name
    shutil.copytree(built_repo.version, model / "1")
    shutil.copytree(built_repo.version, model / "2")
    manifest = json.loads((model / "2" / "manifest.json").read_text())
    manifest["version"] = 2
    (model / "2" / "manifest.json").write_text(json.dumps(manifest))
    return root


def _traffic(client: TestClient, built_repo: BuiltRepo, prefix: str, rows: slice) -> None:
    frame = pd.read_csv(built_repo.csv).iloc[rows]
    records = frame.drop(columns=["target", "row_id"]).to_dict(orient="records")
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    assert client.post("/predict", json={"records": records, "request_id": prefix}).status_code == 200
    labels = [{"request_id": prefix, "row": i, "label": y} for i, y in enumerate(frame["target"].tolist())]
    assert client.post("/feedback", json={"labels": labels}).json()["joined"] == len(labels)


def test_the_live_version_beside_an_earlier_one(
    two_versions: Path, built_repo: BuiltRepo, settings: Settings
) -> None:
    gw = Gateway(
        settings.model_copy(update={"repository": two_versions / built_repo.version.parent.name / "1"})
    )
    gw.load()
    try:
        with TestClient(build_app(gw), base_url="http://gateway") as c:
            _traffic(c, built_repo, "v1", slice(0, 60))
            assert c.post("/admin/reload", headers=AUTH, json={"repository": "2"}).json()["version"] == 2
            _traffic(c, built_repo, "v2", slice(60, 100))
            doc = c.get("/compare", params={"against": 1}).json()
            assert (doc["version"], doc["labelled_rows"]) == (2, 40)
            side = doc["against"]
            assert (side["version"], side["labelled_rows"], side["served_rows"]) == (1, 60, 60)
            by_model = {m["model"]: m for m in side["models"]}
            assert set(by_model) == set(gw.repo.variants)
            for m in by_model.values():
                assert m["offline"] == m["earlier_offline"] is not None  # the same cards
                assert (m["n"], m["earlier_n"]) == (40, 60)
                assert m["earlier_low"] <= m["earlier_online"] <= m["earlier_high"]
            assert "against" not in c.get("/compare").json()
            console = Console(record=True, width=200)
            render(doc, console)  # what `gateway compare --against 1` prints
            text = console.export_text()
            assert "v2 (live) beside v1" in text and "Calibration on labelled rows" in text
            for bad in ("2", "7", "x"):
                r = c.get("/compare", params={"against": bad})
                assert r.status_code == 400 and r.json()["error"].startswith(
                    "against: expected another version of"
                )
    finally:
        gw.close()
