"""The one place where an exception becomes a response: a GatewayError keeps its status and message
(counted by reason), anything else is a bug: logged, counted, and a 500 with the same shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service import metrics
from service.errors import GatewayError
from service.http.bodies import ClientGone
from service.metric_queue import Queued

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]
JSON = (b"content-type", b"application/json")

_REJECTED = {r: Queued(metrics.REJECTED.labels(r)) for r in metrics.REJECT_REASONS}


def failure(exc: Exception, path: str) -> tuple[int, bytes]:
    """(status, {"error": msg} body) for an exception out of any route."""
    if isinstance(exc, GatewayError):
        _REJECTED[exc.reason].inc()
        return exc.status, orjson.dumps({"error": exc.message})
    _REJECTED["internal_error"].inc()
    log.error("unhandled error on %s", path, exc_info=exc)
    return 500, orjson.dumps({"error": "internal error; see the server log"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson-encoded response (numpy-aware, no schema building per request)."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def status_counters(route: str) -> dict[str, Queued]:
    """gateway_http_requests_total's series of one route, by status class."""
    return {c: Queued(metrics.HTTP_REQUESTS.labels(route, c)) for c in metrics.STATUS_CLASSES}


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
