"""The one place where an exception becomes a response: a GatewayError keeps its status and message
(counted by reason), anything else is a bug: logged, counted, and a 500 with the same shape."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response

from service import metrics
from service.errors import GatewayError
from service.metric_queue import Queued

log = logging.getLogger(__name__)
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
