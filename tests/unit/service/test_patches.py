"""Every patch of a dependency's private code applies to the pinned versions, and does what it says."""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml
import pytest

from service import metrics, patches


def test_every_patch_applies_to_the_pinned_bentoml() -> None:
    assert bentoml.__version__ == "1.4.40", "re-check service/patches.py against this BentoML first"
    results = patches.apply_all()
    assert set(results) == {"bentoml_timeout_timer", "otel_hot_routes", "uvicorn_connection_guard"}
    assert all(r.applied for r in results.values()), results
    for name in results:
        assert metrics.REGISTRY.get_sample_value("gateway_patch_applied", {"patch": name}) == 1.0
    assert all(r.applied for r in patches.apply_all().values()), "applying twice is harmless"


async def _call(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    return sent


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_timeout_timer_is_cancelled_when_the_request_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    patches.apply_all()
    handles: list[asyncio.TimerHandle] = []

    async def run() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        real = loop.call_later

        def spy(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            handle = real(*args, **kwargs)
            handles.append(handle)
            return handle

        monkeypatch.setattr(loop, "call_later", spy)
        mw = TimeoutMiddleware(_inner, timeout=30)
        slow = await _call(mw, "/models")
        hot = await _call(mw, "/predict")
        return slow + hot

    sent = asyncio.run(run())
    assert [m["type"] for m in sent].count("http.response.body") == 2
    assert len(handles) == 1, "one timer for the ordinary route, none for the hot route"
    assert handles[0].cancelled(), "the timer does not outlive its request"


def test_hot_routes_skip_the_tracing_middleware() -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    patches.apply_all()
    mw = OpenTelemetryMiddleware(_inner)
    sent = asyncio.run(_call(mw, "/predict"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": []}, "untouched by tracing"


def test_the_connection_cap_is_kept_under_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from service import connections

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    monkeypatch.setattr(connections, "LIMITS", connections.Limits())
    limits = connections.configure(header_timeout_s=2.5, max_connections=5000)
    assert limits.max_connections == 1024 - connections.RESERVED_FDS
    assert limits.header_timeout_s == 2.5
    assert connections.configure(header_timeout_s=1, max_connections=10).max_connections == 10
