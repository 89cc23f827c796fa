"""The hot routes, POST /predict and OIP infer, as raw ASGI ahead of every framework layer.

Starlette's Request and Response objects, two routers and the middlewares of BentoML and Starlette
cost more per request than a single-row onnxruntime run. These handlers read the body from
``receive`` and answer through ``send`` with the same contract as every other route: a GatewayError
becomes its status and {"error": msg}, anything else a logged 500; responses are counted by route
and status class and timed by the variant that answered. Every other request falls through to the
Starlette app. ``HotRoutesMiddleware`` puts the same handlers inside BentoML's stack (see
service/service.py; service/tuning.py lets them skip BentoML's timeout and tracing layers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from service import metrics
from service.core.gateway import Gateway
from service.core.requests import body_object, parse_json
from service.errors import GatewayError, PayloadTooLarge
from service.http import oip

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, Headers]
Handler = Callable[[Scope, Receive, list[str]], Awaitable[Answer]]

JSON = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before sending its whole body: nothing to answer."""


_REJECTED = {r: metrics.Queued(metrics.REJECTED.labels(r)) for r in metrics.REJECT_REASONS}


def failure(exc: Exception, path: str) -> tuple[int, bytes]:
    """(status, {"error": msg} body) for an exception out of any route, counted by reason: a
    GatewayError keeps its status; anything else is a bug, logged, and a 500."""
    if isinstance(exc, GatewayError):
        _REJECTED[exc.reason].inc()
        return exc.status, orjson.dumps({"error": exc.message})
    _REJECTED["internal_error"].inc()
    log.error("unhandled error on %s", path, exc_info=exc)
    return 500, orjson.dumps({"error": "internal error; see the server log"})


def is_hot(path: str) -> bool:
    """POST /predict and /v2/models/{model}[/versions/{version}]/infer."""
    return path == "/predict" or (path.startswith("/v2/models/") and path.endswith("/infer"))


def _infer_params(path: str) -> list[str] | None:
    """[model] or [model, version] of an OIP infer path; None when the path has another shape."""
    parts = path.split("/")
    if len(parts) == 5 and parts[4] == "infer" and parts[3]:
        return [parts[3]]
    if len(parts) == 7 and parts[4] == "versions" and parts[6] == "infer" and parts[3] and parts[5]:
        return [parts[3], parts[5]]
    return None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes (by Content-Length before reading)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body: expected at most {limit} bytes, got {declared}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: expected at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class HotRoutes:
    """ASGI app: the hot routes served directly, everything else by ``fallback``."""

    def __init__(self, gateway: Gateway, fallback: ASGIApp) -> None:
        self.gateway = gateway
        self.fallback = fallback
        self._counters = {
            route: {c: metrics.Queued(metrics.HTTP_REQUESTS.labels(route, c)) for c in metrics.STATUS_CLASSES}
            for route in ("predict", "oip_infer")
        }

    def match(self, scope: Scope) -> tuple[str, Handler, list[str]] | None:
        """(route, handler, path parameters) for a hot request; None for anything else."""
        path = scope["path"]
        if path == "/predict":
            return "predict", self._predict, []
        if is_hot(path):
            params = _infer_params(path)
            if params is not None:
                return "oip_infer", self._infer, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = self.match(scope) if scope["type"] == "http" else None
        if hit is None:
            await self.fallback(scope, receive, send)
        else:
            await self.serve(hit, scope, receive, send)

    async def serve(
        self, hit: tuple[str, Handler, list[str]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        route, handler, params = hit
        try:
            if scope["method"] != "POST":
                status, extra = 405, [JSON, (b"allow", b"POST")]
                body = orjson.dumps({"error": f"{scope['path']}: expected POST, got {scope['method']}"})
            else:
                status, body, extra = await handler(scope, receive, params)
        except ClientGone:
            return
        except Exception as exc:
            (status, body), extra = failure(exc, scope["path"]), [JSON]
        self._counters[route][f"{status // 100}xx"].inc()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _predict(self, scope: Scope, receive: Receive, params: list[str]) -> Answer:
        start = time.perf_counter()
        gateway = self.gateway
        raw = await read_body(scope, receive, gateway.settings.max_body_bytes)
        body = body_object(parse_json(raw))
        out, served = gateway.predict_json(body, header(scope, b"x-request-id"))
        payload = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        timer = gateway.children.request.get((served.variant, "json"))
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        return 200, payload, [JSON, (b"x-request-id", served.request_id.encode())]

    async def _infer(self, scope: Scope, receive: Receive, params: list[str]) -> Answer:
        start = time.perf_counter()
        gateway = self.gateway
        raw = await read_body(scope, receive, gateway.settings.max_body_bytes)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        model, version = params[0], (params[1] if len(params) > 1 else None)
        body, out_headers, served = oip.infer(gateway, model, version, raw, headers)
        timer = gateway.children.request.get((served.variant, "oip"))
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        return 200, body, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]


class HotRoutesMiddleware:
    """The hot routes of ``routes`` ahead of the rest of an ASGI stack (BentoML's, here)."""

    def __init__(self, app: ASGIApp, routes: HotRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = self.routes.match(scope) if scope["type"] == "http" else None
        if hit is None:
            await self.app(scope, receive, send)
        else:
            await self.routes.serve(hit, scope, receive, send)
