"""GET /ui in a real headless Chromium against a real `bentoml serve` with recorded, labelled traffic:
every panel fills, the page reports no error, and a screenshot is kept with the test's files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.helpers import BuiltRepo, Server

pytestmark = pytest.mark.slow
PANELS = (
    "compare",
    "tests",
    "history",
    "calibration",
    "detection",
    "estimates",
    "drift",
    "coverage",
    "latency",
    "routing",
    "against",
)


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Chromium is missing: scripts/setup.sh installs Debian's chromium (as root)"
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_the_live_page_fills_every_panel_in_a_real_browser(
    server: Server, built_repo: BuiltRepo, tmp_path: Path
) -> None:
    frame = pd.read_csv(built_repo.csv).head(80)
    records = frame.drop(columns=["target", "row_id"]).to_dict(orient="records")
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/predict", json={"records": records, "request_id": "ui-1"}).status_code == 200
        labels = [
            {"request_id": "ui-1", "row": i, "label": y} for i, y in enumerate(frame["target"].tolist())
        ]
        assert c.post("/feedback", json={"labels": labels}).json()["joined"] == 80
        # rows without labels, for the accuracy estimates
        assert c.post("/predict", json={"records": records[:40], "request_id": "ui-2"}).status_code == 200
        page = c.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert not re.search(r"(src|href)=\"https?://", page.text), "no external assets"
    shot = tmp_path / "ui.png"
    _chromium(
        "--window-size=1400,1600",
        "--virtual-time-budget=6000",
        f"--screenshot={shot}",
        f"{server.url}/ui?against=1",
    )
    assert shot.stat().st_size > 20_000, "a screenshot of a page with content"
    dom = _chromium(
        "--virtual-time-budget=6000",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        f"{server.url}/ui?against=1",
    )
    html = dom.stdout
    assert 'data-refreshed="' in html, dom.stderr[-2000:]
    for panel in PANELS:
        assert re.search(rf'id="panel-{panel}"[^>]*data-filled="1"', html), f"panel {panel} is empty"
    errors = re.search(r'<div id="errors">(.*?)</div>', html, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors.group(1) if errors else html[:500]
    assert "Uncaught" not in dom.stderr and "Refused to" not in dom.stderr, dom.stderr[-2000:]
    assert "churn v1" in html and "80" in html
    assert "most recent rows without a label" in html  # the estimates table, not its empty message
    assert "live rows in the last 60 min" in html  # the drift table
    assert "against: expected another version" in html  # ?against=1 on a one-version repository
    print(f"screenshot: {shot}")
