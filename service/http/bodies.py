"""Request bodies: read with a size limit (by Content-Length first), parsed as JSON with clear errors."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from starlette.requests import Request

from service.errors import BodyTimeout, InvalidBody, PayloadTooLarge, UnsupportedMediaType, describe
from service.http.types import Receive, Scope


class ClientGone(Exception):
    """The client disconnected before sending its whole body: nothing to answer."""


def header(scope: Scope, name: bytes) -> str | None:
    """One request header's value (latin-1), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def require_json(scope: Scope) -> None:
    """JSON routes take JSON only: a page on another site can post text/plain, form data or a typeless
    blob without a CORS preflight (label poisoning), never application/json. OIP routes do not call
    this (tritonclient sends other types)."""
    value = header(scope, b"content-type")
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type: expected application/json, got {value!r}"
        if value
        else "Content-Type: expected application/json, got none"
    )


async def read_body(scope: Scope, receive: Receive, limit: int, timeout_s: float = 10.0) -> bytes:
    """The whole body within ``timeout_s``, refusing anything over ``limit`` bytes (by Content-Length
    before reading)."""
    try:
        with anyio.fail_after(timeout_s):
            return await _read_body(scope, receive, limit)
    except TimeoutError as exc:
        raise BodyTimeout(f"body: expected the whole body within {timeout_s:g} s") from exc


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
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


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; InvalidBody (400) for an empty or malformed one."""
    if not raw.strip():
        raise InvalidBody("body: expected a JSON object, got an empty body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"body: malformed JSON ({exc}); NaN and Infinity are not JSON") from exc


def body_object(body: Any) -> dict[str, Any]:
    """A JSON body that must be an object."""
    if not isinstance(body, dict):
        raise InvalidBody(f"body: expected a JSON object, got {describe(body)}")
    return body


async def json_body_of(request: Request, limit: int, timeout_s: float = 10.0) -> bytes:
    """The body of a JSON route (415 unless its Content-Type is JSON)."""
    require_json(request.scope)
    return await read_body(request.scope, request.receive, limit, timeout_s)


async def body_of(request: Request, limit: int, timeout_s: float = 10.0) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes (the hot routes' reader)."""
    return await read_body(request.scope, request.receive, limit, timeout_s)
