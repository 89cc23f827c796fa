"""The HTTP surface as one Starlette app: JSON API, admin API and OIP routes.

BentoML mounts it (service/bento.py) beside its own /livez and /readyz; tests can run it in-process.
Every GatewayError becomes {"error": msg} with its status (service/http/responses.py, shared with the
hot routes); anything else is a bug and answers 500 with the same shape.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import metric_queue
from service.core.gateway import Gateway
from service.core.routing import parse_routing
from service.errors import (
    AdminDisabled,
    InvalidField,
    Unauthorized,
    describe,
)
from service.http import oip
from service.http.bodies import ClientGone, body_object, parse_json, read_body
from service.http.hot import HotRoutes
from service.http.responses import failure, json_response, status_counters

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def guarded(route: str, handler: Handler) -> Handler:
    """Map exceptions to responses (service/http/responses.py) and count every response by route and
    status class (the denominator of error ratios)."""
    counters = status_counters(route)

    async def wrapper(request: Request) -> Response:
        try:
            response = await handler(request)
        except ClientGone:
            return Response(status_code=499)  # nobody is left to read it
        except Exception as exc:
            status, body = failure(exc, request.url.path)
            response = Response(body, status_code=status, media_type="application/json")
        counters[f"{response.status_code // 100}xx"].inc()
        return response

    return wrapper


async def body_of(request: Request, limit: int) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes (the hot routes' reader)."""
    return await read_body(request.scope, request.receive, limit)


def build_app(gateway: Gateway) -> HotRoutes:
    """All routes over one Gateway: the hot ones as raw ASGI (service.http.hot), the rest in Starlette."""
    settings = gateway.settings

    async def feedback(request: Request) -> Response:
        body = parse_json(await body_of(request, settings.max_body_bytes))
        return json_response(await anyio.to_thread.run_sync(gateway.feedback, body))

    async def compare(request: Request) -> Response:
        return json_response(await anyio.to_thread.run_sync(gateway.compare))

    async def openapi(request: Request) -> Response:
        from service.http.openapi import document

        return json_response(document(gateway.repo.manifest if gateway.ready else None))

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = await anyio.to_thread.run_sync(metric_queue.exposition)
        return Response(body, media_type=content_type)

    async def models(request: Request) -> Response:
        return json_response(gateway.models_json())

    def check_admin(request: Request) -> None:
        token = settings.admin_token
        if token is None:
            raise AdminDisabled("admin API disabled: set GATEWAY_ADMIN_TOKEN to enable it")
        auth = request.headers.get("authorization", "")
        given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthorized("Authorization: expected 'Bearer <admin token>'")

    async def admin_reload(request: Request) -> Response:
        check_admin(request)
        raw = await body_of(request, settings.max_body_bytes)
        body = body_object(parse_json(raw)) if raw.strip() else {}
        extra = sorted(set(body) - {"repository"})
        if extra:
            raise InvalidField(extra[0], "only 'repository'", "an unknown field")
        path = body.get("repository")
        if path is not None and (not isinstance(path, str) or not path):
            raise InvalidField("repository", "a path", describe(path))
        from pathlib import Path

        from contract.verify import RepositoryError

        try:
            repo = await anyio.to_thread.run_sync(lambda: gateway.load(Path(path) if path else None))
        except RepositoryError as exc:
            raise InvalidField("repository", "a valid model repository", str(exc)) from exc
        return json_response(
            {"model": repo.manifest.name, "version": repo.manifest.version, "path": str(repo.path)}
        )

    async def admin_routing(request: Request) -> Response:
        check_admin(request)
        if request.method == "GET":
            return json_response(gateway.router.as_routing().model_dump(mode="json"))
        routing = parse_routing(body_object(parse_json(await body_of(request, settings.max_body_bytes))))
        router = gateway.set_routing(routing)
        return json_response(router.as_routing().model_dump(mode="json"))

    async def v2_live(request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(request: Request) -> Response:
        return json_response({"ready": gateway.ready}, status=200 if gateway.ready else 503)

    async def v2_server(request: Request) -> Response:
        return json_response(oip.server_metadata())

    async def v2_model(request: Request) -> Response:
        p = request.path_params
        return json_response(oip.model_metadata(gateway, p["model"], p.get("version")))

    async def v2_model_ready(request: Request) -> Response:
        p = request.path_params
        ready = oip.model_ready(gateway, p["model"], p.get("version"))
        return json_response({"name": p["model"], "ready": ready}, status=200 if ready else 503)

    routes = [
        Route("/models", guarded("models", models), methods=["GET"]),
        Route("/feedback", guarded("feedback", feedback), methods=["POST"]),
        Route("/compare", guarded("compare", compare), methods=["GET"]),
        Route("/metrics", guarded("metrics", metrics_endpoint), methods=["GET"]),
        Route("/openapi.json", guarded("models", openapi), methods=["GET"]),
        Route("/admin/reload", guarded("admin", admin_reload), methods=["POST"]),
        Route("/admin/routing", guarded("admin", admin_routing), methods=["GET", "PUT"]),
        Route("/v2", guarded("oip_metadata", v2_server), methods=["GET"]),
        Route("/v2/health/live", guarded("oip_health", v2_live), methods=["GET"]),
        Route("/v2/health/ready", guarded("oip_health", v2_ready), methods=["GET"]),
        Route("/v2/models/{model}", guarded("oip_metadata", v2_model), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", guarded("oip_metadata", v2_model), methods=["GET"]),
        Route("/v2/models/{model}/ready", guarded("oip_health", v2_model_ready), methods=["GET"]),
        Route(
            "/v2/models/{model}/versions/{version}/ready",
            guarded("oip_health", v2_model_ready),
            methods=["GET"],
        ),
    ]
    return HotRoutes(gateway, Starlette(routes=routes))
