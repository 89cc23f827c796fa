"""The hot routes, POST /predict and OIP infer, as raw ASGI ahead of every framework layer.

Starlette's Request and Response objects, two routers and the middlewares of BentoML and Starlette
cost more per request than a single-row onnxruntime run. These handlers read the body from
``receive`` and answer through ``send`` with the same contract as every other route: a GatewayError
becomes its status and {"error": msg}, anything else a logged 500 (service/http/responses.py);
responses are counted by route and status class and timed by the variant that answered. Every other
request falls through to the Starlette app. ``HotRoutesMiddleware`` puts the same handlers inside
BentoML's stack (see service/bento.py; service/patches.py lets them skip BentoML's timeout and
tracing layers).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson

from service.core.gateway import Gateway
from service.http import oip
from service.http.bodies import ClientGone, body_object, header, parse_json, read_body, require_json
from service.http.responses import JSON, failure, status_counters
from service.http.types import Answer, ASGIApp, Receive, Scope, Send

Handler = Callable[[Scope, Receive, list[str]], Awaitable[Answer]]
Hit = tuple[str, Handler, list[str]]
"""(route, handler, path parameters) of a hot request."""


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


class HotRoutes:
    """ASGI app: the hot routes answered directly, everything else by ``fallback``."""

    def __init__(self, gateway: Gateway, fallback: ASGIApp) -> None:
        self.gateway = gateway
        self.fallback = fallback
        self._counters = {route: status_counters(route) for route in ("predict", "oip_infer")}

    def match(self, scope: Scope) -> Hit | None:
        """The hot route of a request; None for anything else."""
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
            await self.respond(hit, scope, receive, send)

    async def respond(self, hit: Hit, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a hot route's handler and send its answer (or its error) in two ASGI messages."""
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
        require_json(scope)
        raw = await read_body(
            scope, receive, gateway.settings.max_body_bytes, gateway.settings.body_timeout_s
        )
        body = body_object(parse_json(raw))
        out, job = gateway.predict_json(body, header(scope, b"x-request-id"))
        payload = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
        timer = gateway.series.request.get((job.variant, "json"))
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        return 200, payload, [JSON, (b"x-request-id", job.request_id.encode())]

    async def _infer(self, scope: Scope, receive: Receive, params: list[str]) -> Answer:
        start = time.perf_counter()
        gateway = self.gateway
        raw = await read_body(
            scope, receive, gateway.settings.max_body_bytes, gateway.settings.body_timeout_s
        )
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        model, version = params[0], (params[1] if len(params) > 1 else None)
        body, out_headers, job = oip.infer(gateway, model, version, raw, headers)
        timer = gateway.series.request.get((job.variant, "oip"))
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
            await self.routes.respond(hit, scope, receive, send)
