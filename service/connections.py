"""Bounds on connections that uvicorn leaves open: a deadline for each request's headers and a cap on
open connections per worker.

Uvicorn arms no timer while a request's headers arrive (its keep-alive timer is cancelled by the
first byte), so a client that sends half a request line holds a connection, a file descriptor and
parser state for as long as it likes; five hundred of them cost nothing to send. BentoML does not
expose uvicorn's ``limit_concurrency`` either. This patch of uvicorn's httptools protocol (the one
``http="auto"`` picks when httptools is installed, as it is here):

- arms a timer when a connection opens and after each response, cancelled when the next request's
  headers are complete; when it fires the connection is closed (with a 408 when part of a request
  had arrived) and counted in ``gateway_connections_closed_total{reason="header_timeout"}``;
- answers a request whose headers complete while the worker holds more than the cap of open
  connections with 503 ``overloaded``, ``Retry-After: 1`` and ``Connection: close``, counted with
  ``reason="over_limit"``: a balancer retries elsewhere, and accepted connections never exhaust the
  descriptors (the soft ``RLIMIT_NOFILE`` is raised to the hard limit, and the cap kept below it).

Bodies are bounded separately, at the ASGI layer (GATEWAY_BODY_TIMEOUT_S, service/http/bodies.py).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Any

import orjson

from service import metrics

log = logging.getLogger(__name__)
MARK = "_gateway_connection_guard"
# descriptors kept for what is not a client connection: the ledger, ONNX files, sockets to the
# evaluator, logs
RESERVED_FDS = 128
TIMED_OUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


@dataclass
class Limits:
    """What the guard enforces in this worker (set by configure(); defaults until then)."""

    header_timeout_s: float = 10.0
    max_connections: int = 4096


LIMITS = Limits()
_CLOSED = {r: metrics.CONNECTIONS_CLOSED.labels(r) for r in metrics.CONNECTION_CLOSE_REASONS}


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the usual default of 1024 is less than one
    burst); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def configure(header_timeout_s: float, max_connections: int) -> Limits:
    """Set this worker's limits; the cap is lowered (with a warning) to what the descriptor limit
    leaves room for, so connections are refused with a 503 before accept() fails for lack of them."""
    soft = raise_descriptor_limit()
    room = max(1, soft - RESERVED_FDS) if soft != resource.RLIM_INFINITY else max_connections
    if max_connections > room:
        log.warning(
            "GATEWAY_MAX_CONNECTIONS=%d is more than the open-file limit (%d) leaves room for; using %d",
            max_connections,
            soft,
            room,
        )
    LIMITS.header_timeout_s = header_timeout_s
    LIMITS.max_connections = min(max_connections, room)
    return LIMITS


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    _CLOSED["over_limit"].inc()
    body = orjson.dumps(
        {"error": f"overloaded: this worker holds its limit of {LIMITS.max_connections} connections; retry"}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _arm(protocol: Any) -> None:
    _disarm(protocol)
    protocol._gateway_header_timer = protocol.loop.call_later(LIMITS.header_timeout_s, _expired, protocol)


def _disarm(protocol: Any) -> None:
    timer = getattr(protocol, "_gateway_header_timer", None)
    if timer is not None:
        timer.cancel()
        protocol._gateway_header_timer = None


def _expired(protocol: Any) -> None:
    protocol._gateway_header_timer = None
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return
    if protocol.cycle is not None and not protocol.cycle.response_complete:
        return  # a request is being served: its headers did arrive
    _CLOSED["header_timeout"].inc()
    if getattr(protocol, "_gateway_partial", False):
        body = orjson.dumps({"error": f"request headers did not arrive within {LIMITS.header_timeout_s:g} s"})
        transport.write(TIMED_OUT_408 % (len(body), body))
    transport.close()


def guard_uvicorn() -> tuple[bool, str]:
    """Patch uvicorn's httptools protocol; (applied, reason when not)."""
    try:
        from uvicorn.protocols.http import auto
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as exc:
        return False, f"cannot import uvicorn's httptools protocol: {exc}"
    cls: Any = HttpToolsProtocol
    if auto.AutoHTTPProtocol is not cls:
        return False, "uvicorn's auto HTTP protocol is not httptools"
    if getattr(cls, MARK, False):
        return True, ""
    hooks = (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_headers_complete",
        "on_response_complete",
    )
    missing = [h for h in hooks if not callable(getattr(cls, h, None))]
    if missing:
        return False, f"HttpToolsProtocol has no {', '.join(missing)}"
    original = {h: getattr(cls, h) for h in hooks}

    def connection_made(self: Any, transport: Any) -> None:
        original["connection_made"](self, transport)
        self._gateway_partial = False
        _arm(self)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        _disarm(self)
        original["connection_lost"](self, exc)

    def data_received(self: Any, data: bytes) -> None:
        if getattr(self, "_gateway_header_timer", None) is not None:
            self._gateway_partial = True
        original["data_received"](self, data)

    def on_headers_complete(self: Any) -> None:
        _disarm(self)
        self._gateway_partial = False
        if len(self.connections) <= LIMITS.max_connections:
            return original["on_headers_complete"](self)
        app = self.app
        self.app = _overloaded  # uvicorn binds the app to the request cycle it starts here
        try:
            original["on_headers_complete"](self)
        finally:
            self.app = app

    def on_response_complete(self: Any) -> None:
        original["on_response_complete"](self)
        if not self.transport.is_closing() and not self.pipeline:
            _arm(self)  # the next request's headers get the same deadline

    for name, fn in (
        ("connection_made", connection_made),
        ("connection_lost", connection_lost),
        ("data_received", data_received),
        ("on_headers_complete", on_headers_complete),
        ("on_response_complete", on_response_complete),
    ):
        setattr(cls, name, fn)
    setattr(cls, MARK, True)
    return True, ""
