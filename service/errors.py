"""Errors that reach clients, each carrying its HTTP status; http.py turns them into {"error": msg}.

GatewayError (500)
├── BadRequest (400)
│   ├── InvalidBody (400)         malformed JSON or a body of the wrong shape
│   ├── InvalidField (400)        one field has the wrong type or value; names the field
│   └── UnknownVariant (400)      a variant not in the repository
├── Unauthorized (401)            admin call without the right token
├── AdminDisabled (403)           admin call while no admin token is configured
├── NotFound (404)                unknown model or version on the OIP routes
├── PayloadTooLarge (413)         body or batch over the configured limits
├── UnsupportedMediaType (415)    a content type we do not parse
├── NotReady (503)                repository not loaded (yet)
└── LedgerUnavailable (503)       the ledger cannot take a write now (nothing was recorded)
"""

from __future__ import annotations

from collections.abc import Iterable


class GatewayError(Exception):
    """Base: an error with an HTTP status and a message for the client."""

    reason = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    """The request cannot be served as sent."""

    reason = "invalid_body"
    status = 400


class InvalidBody(BadRequest):
    """Malformed JSON or a body of the wrong shape."""

    reason = "invalid_body"


class InvalidField(BadRequest):
    """One field has the wrong type or value."""

    reason = "invalid_field"

    def __init__(self, field: str, expected: str, got: str) -> None:
        super().__init__(f"{field}: expected {expected}, got {got}")
        self.field = field


class UnknownVariant(BadRequest):
    """A variant name the repository does not have."""

    reason = "unknown_variant"

    def __init__(self, name: str, known: Iterable[str], field: str = "variant") -> None:
        super().__init__(f"{field}: unknown variant {name!r}; expected one of {', '.join(sorted(known))}")


class Unauthorized(GatewayError):
    """Missing or wrong admin token."""

    reason = "unauthorized"
    status = 401


class AdminDisabled(GatewayError):
    """The admin API is off because no token is configured."""

    reason = "admin_disabled"
    status = 403


class NotFound(GatewayError):
    """Unknown model or version."""

    reason = "not_found"
    status = 404


class PayloadTooLarge(GatewayError):
    """Body or batch over the configured limit."""

    reason = "payload_too_large"
    status = 413


class UnsupportedMediaType(GatewayError):
    """A content type the endpoint does not parse."""

    reason = "unsupported_media_type"
    status = 415


class BodyTimeout(GatewayError):
    """The client did not send its whole body in time (a slow or stalled upload holds a connection)."""

    reason = "body_timeout"
    status = 408


class Conflict(GatewayError):
    """The request contradicts the current state (e.g. a rollback with nothing to roll back)."""

    reason = "conflict"
    status = 409


class NotReady(GatewayError):
    """The repository is not loaded."""

    reason = "not_ready"
    status = 503


class LedgerUnavailable(GatewayError):
    """The ledger refused a write (disk full, read-only, locked): nothing of the request was recorded."""

    reason = "ledger_unavailable"
    status = 503


def describe(value: object) -> str:
    """A short description of a bad value for error messages."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind.get(type(value), type(value).__name__)} {text}"
