"""The OpenAPI description of the Open Inference Protocol routes and the admin reload, so that a
schema-driven fuzzer reaches them too. Each schema is exactly as strict as the server: what it refuses
the server refuses (400/404), and fields the server ignores are allowed."""

from __future__ import annotations

from typing import Any

from contract.manifest import Manifest
from service.http.oip_tensors import NUMERIC_TYPES, output_names

REQUEST_ID = {"type": "string", "pattern": r"^[!-~]{1,128}$"}


def _errors(*codes: tuple[int, str]) -> dict[str, Any]:
    return {
        str(code): {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code, text in codes
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or []}


def schemas(manifest: Manifest | None) -> dict[str, Any]:
    """InferRequest, InferResponse and ReloadRequest (with the loaded model's input and output names)."""
    inputs = (
        sorted({c.name for c in manifest.inputs} | {c.tensor for c in manifest.inputs}) if manifest else None
    )
    outputs = output_names(manifest) if manifest else None
    name: dict[str, Any] = {"type": "string"} if inputs is None else {"enum": inputs}
    out_name: dict[str, Any] = {"type": "string"} if outputs is None else {"enum": outputs}
    parameters = {"type": ["object", "null"]}
    tensor_in = _object(
        {
            "name": name,
            "shape": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "prefixItems": [{"type": "integer", "minimum": 1}, {"const": 1}],
            },
            "datatype": {"enum": [*NUMERIC_TYPES, "BYTES"]},
            "parameters": {
                **parameters,
                "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            },
            "data": {"description": "row values, flat or nested; or parameters.binary_data_size"},
        },
        ["name", "shape", "datatype"],
    )
    tensor_out = _object(
        {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array"}}
    )
    return {
        "InferRequest": _object(
            {
                "id": REQUEST_ID,
                "parameters": {
                    **parameters,
                    "properties": {
                        "routing_key": {"type": ["string", "null"], "minLength": 1},
                        "binary_data_output": {"type": ["boolean", "null"]},
                    },
                },
                "inputs": {"type": "array", "minItems": 1, "items": tensor_in},
                "outputs": {
                    "type": ["array", "null"],
                    "items": _object(
                        {
                            "name": out_name,
                            "parameters": {
                                **parameters,
                                "properties": {"binary_data": {"type": ["boolean", "null"]}},
                            },
                        },
                        ["name"],
                    ),
                },
            },
            ["inputs"],
        ),
        "InferResponse": _object(
            {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": tensor_out},
            },
            ["model_name", "model_version", "id", "outputs"],
        ),
        "ReloadRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "repository": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "description": "a version, a model name or name/version under the models root; "
                    "absent or null reloads the serving version",
                }
            },
        },
    }


def paths(manifest: Manifest | None) -> dict[str, Any]:
    """The /v2 routes and POST /admin/reload."""
    models = (
        sorted({manifest.name, *(m.name for m in manifest.members), *(e.name for e in manifest.ensembles)})
        if manifest
        else None
    )
    model = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string"} if models is None else {"enum": models},
    }
    served = {"type": "string"} if manifest is None else {"enum": [str(manifest.version)]}
    version = {"name": "version", "in": "path", "required": True, "schema": served}
    unknown = _errors((404, "unknown model or version"))
    metadata = _ok(
        "model metadata", _object({"name": {"type": "string"}, "versions": {"type": "array"}}, ["name"])
    )
    ready = {
        **_ok("ready", _object({"name": {"type": "string"}, "ready": {"type": "boolean"}}, ["ready"])),
        "503": {"description": "not ready", "content": {"application/json": {"schema": {"type": "object"}}}},
    }
    infer = {
        "post": {
            "summary": "Open Inference Protocol infer (JSON, or the binary tensor extension)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}},
            },
            "responses": {
                "200": {
                    "description": "outputs (application/octet-stream when binary outputs were asked for)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                        "application/octet-stream": {},
                    },
                },
                **_errors(
                    (400, "bad input"),
                    (404, "unknown model or version"),
                    (413, "too large"),
                    (503, "not ready"),
                ),
            },
        }
    }
    return {
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "responses": _ok("server metadata", _object({"name": {"type": "string"}}, ["name"])),
            }
        },
        "/v2/health/live": {
            "get": {"summary": "Liveness", "responses": _ok("live", _object({"live": {"type": "boolean"}}))}
        },
        "/v2/health/ready": {"get": {"summary": "Readiness", "responses": ready}},
        "/v2/models/{model}": {
            "get": {"parameters": [model], "summary": "Model metadata", "responses": {**metadata, **unknown}}
        },
        "/v2/models/{model}/versions/{version}": {
            "get": {
                "parameters": [model, version],
                "summary": "Model metadata of a version",
                "responses": {**metadata, **unknown},
            }
        },
        "/v2/models/{model}/ready": {
            "get": {"parameters": [model], "summary": "Model readiness", "responses": {**ready, **unknown}}
        },
        "/v2/models/{model}/versions/{version}/ready": {
            "get": {
                "parameters": [model, version],
                "summary": "Model version readiness",
                "responses": {**ready, **unknown},
            }
        },
        "/v2/models/{model}/infer": {"post": {"parameters": [model], **infer["post"]}},
        "/v2/models/{model}/versions/{version}/infer": {
            "post": {"parameters": [model, version], **infer["post"]}
        },
        "/admin/reload": {
            "post": {
                "summary": "Load another version (or the same one again) and serve it",
                "security": [{"admin": []}],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ReloadRequest"}}
                    },
                },
                "responses": {
                    **_ok(
                        "loaded",
                        _object(
                            {
                                "model": {"type": "string"},
                                "version": {"type": "integer"},
                                "path": {"type": "string"},
                            }
                        ),
                    ),
                    **_errors(
                        (400, "bad input or not a valid repository"),
                        (401, "wrong or missing bearer token"),
                        (403, "admin API disabled"),
                        (415, "not JSON (Content-Type)"),
                    ),
                },
            }
        },
    }
