"""GET /ui: one self-contained page (no build step, no external assets) that a person opens in a
browser: offline vs online with intervals and always-valid verdicts, live accuracy and calibration since
the page opened, calibration, accuracy estimates before labels, input drift per column, label coverage,
latency per variant, the routing and the ledger's state, and with ``?against=N`` an earlier version
beside the live one. It reads the JSON API (/compare, /drift, /models, /health) and /metrics every
5 s; the page is ui.html beside this file.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

PAGE = (Path(__file__).with_name("ui.html")).read_text(encoding="utf-8")
# Inline script and style only, data from this origin only.
POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:"


async def ui(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"content-security-policy": POLICY, "cache-control": "no-cache"})
