"""The JSON API's OpenAPI document, from pydantic models of its bodies.

The hot routes validate by hand (building pydantic objects per request costs more than the models'
inference); these models describe exactly the same shapes, and the tests send the documented
examples to the real endpoints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.manifest import Manifest, Routing
from service.http import openapi_oip

Value = float | int | str | None
FLOAT32_MAX = 3.4028234663852886e38
"""Numeric columns are float32 inside the graphs: larger magnitudes are refused."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Doc):
    """Rows to predict, by column name."""

    records: list[dict[str, Value]] = Field(
        min_length=1, description="One object per row: {column: value}; null for a missing value."
    )
    variant: str | None = Field(
        None,
        description="Force a member, 'vote', 'average', 'weighted', 'stack' or "
        "'champion' instead of routing.",
    )
    routing_key: str | None = Field(
        None, min_length=1, description="Sticky A/B assignment key (e.g. a user id)."
    )
    request_id: str | None = Field(
        None,
        pattern=r"^[!-~]{1,128}$",
        description="Your id for this request (also X-Request-ID); labels are posted against it.",
    )
    return_members: bool = Field(False, description="Also return every member's output.")


class RowAnswer(_Doc):
    """One row's answer: label and probabilities (classification) or value (regression)."""

    label: Value = None
    probabilities: dict[str, float] | None = None
    value: float | None = None


class PredictResponse(_Doc):
    """The answer and who gave it."""

    request_id: str
    model: str
    version: int
    variant: str
    role: Literal["champion", "challenger", "forced"]
    predictions: list[RowAnswer]
    members: dict[str, list[RowAnswer]] | None = None


class Label(_Doc):
    """A ground-truth label for one row of an earlier request."""

    request_id: str
    row: int = Field(0, ge=0)
    label: Value


class FeedbackRequest(_Doc):
    """Labels that arrived; one item alone or a bare list are accepted too."""

    labels: list[Label] = Field(min_length=1, max_length=10_000)


class FeedbackResponse(_Doc):
    """What happened to each label."""

    joined: int
    unknown_id: int
    duplicate: int
    conflicting: int
    invalid_label: int
    received: int
    errors: list[str]


class Error(_Doc):
    """Every 4xx/5xx body."""

    error: str = Field(description="'<field>: expected X, got Y' for bad input")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _get_with_query(
    summary: str, name: str, description: str, schema: dict[str, Any], answer: str, errors: dict[str, Any]
) -> dict[str, Any]:
    """A GET operation with one optional query parameter and a JSON document as its answer."""
    parameter = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    return {
        "get": {
            "summary": summary,
            "parameters": [parameter],
            "responses": {"200": {"description": answer}, **errors},
        }
    }


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


def document(manifest: Manifest | None = None, max_rows: int | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 for every route: the JSON API here, OIP and /admin/reload in openapi_oip.py.

    Long because most of it is the document itself, a literal read top to bottom."""
    models: list[type[BaseModel]] = [
        PredictRequest,
        PredictResponse,
        RowAnswer,
        Label,
        FeedbackRequest,
        FeedbackResponse,
        Error,
        Routing,
    ]
    schemas: dict[str, Any] = {}
    for m in models:
        schema = m.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[m.__name__] = schema
    if manifest is not None:
        schemas["Record"] = {
            "type": "object",
            "additionalProperties": False,
            "required": [c.name for c in manifest.inputs],
            "properties": {
                c.name: (
                    {"type": ["number", "null"], "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
                    if c.kind == "numeric"
                    else {"type": ["string", "null"], "examples": c.categories[:5]}
                )
                for c in manifest.inputs
            },
        }
        schemas["PredictRequest"]["properties"]["records"]["items"] = _ref("Record")
        if max_rows is not None:
            schemas["PredictRequest"]["properties"]["records"]["maxItems"] = max_rows
        names = [m.name for m in manifest.members] + [e.name for e in manifest.ensembles] + ["champion"]
        variant = schemas["PredictRequest"]["properties"]["variant"]
        variant["anyOf"] = [{"enum": sorted(names)}, {"type": "null"}]
    # Labels are judged one by one: an item that is not a valid label is counted (invalid_label, with
    # the reason in errors), the rest of the batch still joins; only the envelope is refused.
    label_item = {"anyOf": [_ref("Label"), {"description": "anything else: counted as invalid_label"}]}
    schemas["FeedbackRequest"]["properties"]["labels"]["items"] = label_item
    errors = {
        str(code): {"description": text, **_json("Error")}
        for code, text in [
            (400, "bad input"),
            (413, "too large"),
            (415, "not JSON (Content-Type)"),
            (503, "not ready, or the ledger cannot take labels now"),
        ]
    }
    admin_errors = {
        str(code): {"description": text, **_json("Error")}
        for code, text in [(401, "wrong or missing bearer token"), (403, "admin API disabled")]
    }
    schemas.update(openapi_oip.schemas(manifest))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ensemble-gateway",
            "version": "1",
            "description": "Every candidate served side by side, judged live. OIP v2 routes under /v2.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Predict rows (routed: champion, A/B, shadow)",
                    "requestBody": {"required": True, **_json("PredictRequest")},
                    "responses": {"200": {"description": "answers", **_json("PredictResponse")}, **errors},
                }
            },
            "/feedback": {
                "post": {
                    "summary": "Post ground-truth labels for earlier predictions",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        _ref("FeedbackRequest"),
                                        {"type": "object", "not": {"required": ["labels"]}, **label_item},
                                        {
                                            "type": "array",
                                            "items": label_item,
                                            "minItems": 1,
                                            "maxItems": 10_000,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {"200": {"description": "counts", **_json("FeedbackResponse")}, **errors},
                }
            },
            "/compare": _get_with_query(
                "Offline vs online, intervals and paired tests",
                "against",
                "an earlier version of the repository to show beside the live one",
                {"type": "integer", "minimum": 1},
                "comparison document",
                errors,
            ),
            "/drift": _get_with_query(
                "Input drift per column: live rows of a window against the training reference",
                "window",
                "seconds of live rows to compare (default GATEWAY_DRIFT_WINDOW_S)",
                {"type": "number", "minimum": 60},
                "drift document",
                errors,
            ),
            "/models": {
                "get": {
                    "summary": "Members, ensembles, cards, schema and routing",
                    "responses": {"200": {"description": "repository description"}},
                }
            },
            "/health": {
                "get": {
                    "summary": "Readiness, the recording and the ledger (ok or degraded, with the reason)",
                    "responses": {
                        "200": {
                            "description": "ready",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "503": {
                            "description": "not ready",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics, aggregated across workers",
                    "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
                }
            },
            "/admin/routing": {
                "get": {
                    "summary": "The routing in force",
                    "security": [{"admin": []}],
                    "responses": {"200": {"description": "routing", **_json("Routing")}, **admin_errors},
                },
                "put": {
                    "summary": "Replace the routing (names must be variants of the loaded version)",
                    "security": [{"admin": []}],
                    "requestBody": {"required": True, **_json("Routing")},
                    "responses": {
                        "200": {"description": "routing now", **_json("Routing")},
                        **errors,
                        **admin_errors,
                    },
                },
            },
            "/admin/rollback": {
                "post": {
                    "summary": "Undo the newest promotion of the served version (recorded with its evidence)",
                    "security": [{"admin": []}],
                    "responses": {
                        "200": {"description": "the rollback decision", "content": {"application/json": {}}},
                        "409": {"description": "nothing to roll back", **_json("Error")},
                        "503": {"description": "the ledger cannot be written now", **_json("Error")},
                        **admin_errors,
                    },
                }
            },
            "/admin/decisions": {
                "get": {
                    "summary": "Every routing decision (promotions, rollbacks) of the served version",
                    "security": [{"admin": []}],
                    "responses": {
                        "200": {
                            "description": "decisions, oldest first",
                            "content": {"application/json": {}},
                        },
                        "503": {"description": "the ledger cannot be read now", **_json("Error")},
                        **admin_errors,
                    },
                }
            },
            **openapi_oip.paths(manifest),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "GATEWAY_ADMIN_TOKEN"}
            },
        },
    }
