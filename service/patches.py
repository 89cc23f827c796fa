"""Process-level tuning for the serving worker: garbage collector, BentoML's timeout timers, and the
hot routes (service.http.hot) skipping BentoML's timeout and tracing layers.

BentoML 1.4's TimeoutMiddleware schedules one ``loop.call_later(timeout)`` per request and never
cancels it, so every request's timer, future and closures stay alive for the whole timeout (30 s):
at thousands of requests a second the heap fills with them and full collections pause the worker for
100-180 ms. We cancel each timer as soon as its request finishes, and freeze the long-lived heap
(sessions, modules) after loading so collections stop rescanning it.

The hot routes skip the timeout layer altogether: their work is bounded (body size, rows per
request) and synchronous, so a timer could not interrupt it, only cost a task and a timer per request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from service.http.hot import is_hot

log = logging.getLogger(__name__)


def freeze_heap(thresholds: tuple[int, int, int]) -> None:
    """Collect once, move everything alive now to the permanent generation, and set thresholds
    (GATEWAY_GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def patch_timeout_middleware() -> bool:
    """Make BentoML's TimeoutMiddleware cancel its timer when the request ends; False if the
    middleware is not the shape we know (then it is left alone)."""
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:  # pragma: no cover
        return False
    cls: Any = getattr(traffic, "TimeoutMiddleware", None)
    if cls is None or getattr(cls, "_gateway_patched", False) or not hasattr(cls, "_set_timer_out"):
        return False
    from starlette.responses import JSONResponse

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or (scope["type"] == "http" and is_hot(scope["path"])):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        handle = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
                )
                await resp(scope, receive, send)
        else:
            handle.cancel()
            await fut
        finally:
            handle.cancel()

    cls.__call__ = __call__
    cls._gateway_patched = True
    return True


def bypass_tracing_for_hot_routes() -> bool:
    """Let the hot routes skip OpenTelemetry's ASGI middleware; False if it is not the shape we know.

    They are excluded from tracing anyway (service.tracing.excluded_urls), but the middleware still
    rebuilt and regex-matched each request's URL to find that out."""
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    except ImportError:  # pragma: no cover
        return False
    cls: Any = OpenTelemetryMiddleware
    if getattr(cls, "_gateway_patched", False):
        return True
    original = cls.__call__

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_hot(scope["path"]):
            return await self.app(scope, receive, send)
        return await original(self, scope, receive, send)

    cls.__call__ = __call__
    cls._gateway_patched = True
    return True
