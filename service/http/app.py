"""The HTTP surface as one Starlette app: JSON API, admin API and OIP routes.

BentoML mounts it (service/bento.py) beside its own /livez and /readyz; tests can run it in-process.
Every GatewayError becomes {"error": msg} with its status (service/http/responses.py, shared with the
hot routes); anything else is a bug and answers 500 with the same shape.
"""

from __future__ import annotations

import logging

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import metric_queue
from service.core.gateway import Gateway
from service.http.admin import admin_routes
from service.http.bodies import json_body_of, parse_json
from service.http.hot import HotRoutes
from service.http.oip import oip_routes
from service.http.responses import guarded, json_response
from service.http.ui import ui

log = logging.getLogger(__name__)


def build_app(gateway: Gateway) -> HotRoutes:
    """All routes over one Gateway: the hot ones as raw ASGI (service.http.hot), the rest in Starlette."""
    settings = gateway.settings

    async def feedback(request: Request) -> Response:
        body = parse_json(await json_body_of(request, settings.max_body_bytes, settings.body_timeout_s))
        return json_response(await anyio.to_thread.run_sync(gateway.feedback, body))

    async def compare(request: Request) -> Response:
        against = request.query_params.get("against")
        return json_response(await anyio.to_thread.run_sync(gateway.compare, against))

    async def drift(request: Request) -> Response:
        window = request.query_params.get("window")
        return json_response(await anyio.to_thread.run_sync(gateway.drift, window))

    async def openapi(request: Request) -> Response:
        from service.http.openapi import document

        return json_response(
            document(gateway.repo.manifest if gateway.ready else None, settings.max_batch_rows)
        )

    async def health(request: Request) -> Response:
        doc = gateway.health()
        return json_response(doc, status=200 if doc["ready"] else 503)

    async def metrics_endpoint(request: Request) -> Response:
        gateway.health()  # the ledger gauges are refreshed at each scrape
        body, content_type = await anyio.to_thread.run_sync(metric_queue.exposition)
        return Response(body, media_type=content_type)

    async def models(request: Request) -> Response:
        return json_response(gateway.models_json())

    routes = [
        Route("/models", guarded("models", models), methods=["GET"]),
        Route("/feedback", guarded("feedback", feedback), methods=["POST"]),
        Route("/compare", guarded("compare", compare), methods=["GET"]),
        Route("/drift", guarded("drift", drift), methods=["GET"]),
        Route("/metrics", guarded("metrics", metrics_endpoint), methods=["GET"]),
        Route("/health", guarded("models", health), methods=["GET"]),
        Route("/ui", guarded("models", ui), methods=["GET"]),
        Route("/openapi.json", guarded("models", openapi), methods=["GET"]),
        *admin_routes(gateway),
        *oip_routes(gateway),
    ]
    return HotRoutes(gateway, Starlette(routes=routes))
