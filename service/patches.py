"""Patches of dependencies' private code, each checked: it applies only to the shape it was written
for, says so loudly when it does not (a warning at start, ``gateway_patch_applied{patch} 0``), and
tests/unit/service/test_patches.py pins that every patch applies to the pinned BentoML.

- ``bentoml_timeout_timer``: BentoML 1.4's TimeoutMiddleware schedules one
  ``loop.call_later(timeout)`` per request and never cancels it, so every request's timer, future and
  closures stay alive for the whole timeout (30 s): at thousands of requests a second the heap fills
  with them and full collections pause the worker for 100-180 ms. The patch cancels each timer as soon
  as its request finishes, and lets the hot routes skip the layer altogether: their work is bounded
  (body size, rows per request) and synchronous, so a timer could not interrupt it, only cost a task
  and a timer per request.
- ``otel_hot_routes``: the hot routes skip OpenTelemetry's ASGI middleware. They are excluded from
  tracing anyway (``tracing.excluded_urls``), but the middleware still rebuilt and regex-matched each
  request's URL to find that out.
- ``uvicorn_connection_guard``: a deadline for request headers and a cap on open connections per
  worker, neither of which uvicorn (as BentoML starts it) has (service/connections.py).

Also here: freezing the long-lived heap after loading, so collections stop rescanning it.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service import connections, metrics
from service.http.hot import is_hot

log = logging.getLogger(__name__)
MARK = "_gateway_patched"


@dataclass(frozen=True)
class PatchResult:
    """Whether one patch applied, and why not when it did not."""

    name: str
    applied: bool
    reason: str = ""


def freeze_heap(thresholds: tuple[int, int, int]) -> None:
    """Collect once, move everything alive now to the permanent generation, and set thresholds
    (GATEWAY_GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


def patch_timeout_middleware() -> PatchResult:
    """Cancel BentoML's per-request timeout timer when the request ends; hot routes skip it."""
    name = "bentoml_timeout_timer"
    try:
        from bentoml._internal.server.http import traffic
    except ImportError as exc:
        return PatchResult(name, False, f"cannot import bentoml's traffic module: {exc}")
    cls: Any = getattr(traffic, "TimeoutMiddleware", None)
    if cls is None:
        return PatchResult(name, False, "bentoml has no TimeoutMiddleware")
    if getattr(cls, MARK, False):
        return PatchResult(name, True)
    source = _source(cls.__call__)
    if not hasattr(cls, "_set_timer_out") or "call_later" not in source or "self.timeout" not in source:
        return PatchResult(name, False, "TimeoutMiddleware is not the shape this patch was written for")
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
    setattr(cls, MARK, True)
    return _verified(name, cls, __call__)


def bypass_tracing_for_hot_routes() -> PatchResult:
    """Let the hot routes skip OpenTelemetry's ASGI middleware."""
    name = "otel_hot_routes"
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    except ImportError as exc:
        return PatchResult(name, False, f"cannot import OpenTelemetry's ASGI middleware: {exc}")
    cls: Any = OpenTelemetryMiddleware
    if getattr(cls, MARK, False):
        return PatchResult(name, True)
    if list(inspect.signature(cls.__call__).parameters) != ["self", "scope", "receive", "send"]:
        return PatchResult(name, False, "OpenTelemetryMiddleware.__call__ is not (scope, receive, send)")
    original = cls.__call__

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_hot(scope["path"]):
            return await self.app(scope, receive, send)
        return await original(self, scope, receive, send)

    cls.__call__ = __call__
    setattr(cls, MARK, True)
    return _verified(name, cls, __call__)


def _verified(name: str, cls: Any, fn: Callable[..., Any]) -> PatchResult:
    if cls.__call__ is not fn:
        return PatchResult(name, False, f"{cls.__name__}.__call__ did not take the patch")
    return PatchResult(name, True)


def guard_connections() -> PatchResult:
    """Header deadline and connection cap in uvicorn's protocol (service/connections.py)."""
    applied, reason = connections.guard_uvicorn()
    return PatchResult("uvicorn_connection_guard", applied, reason)


def apply_all() -> dict[str, PatchResult]:
    """Apply every patch; warn about each one that did not apply and publish the outcome."""
    results = {
        r.name: r for r in (patch_timeout_middleware(), bypass_tracing_for_hot_routes(), guard_connections())
    }
    for r in results.values():
        metrics.PATCH_APPLIED.labels(r.name).set(1 if r.applied else 0)
        if not r.applied:
            log.warning(
                "patch %s did NOT apply (%s): the gateway works, without the fix it makes", r.name, r.reason
            )
    return results
