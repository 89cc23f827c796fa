"""Open Inference Protocol v2 (KServe / Triton HTTP): metadata, readiness and infer, JSON and binary.

Model names: the repository name is the routed gateway model (champion, A/B, shadow as configured);
every member and ensemble name is a model of its own. Inputs are named by column (or ONNX input) name,
shape [N] or [N, 1]. The binary tensor extension (tritonclient's default) is supported both ways.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.core.gateway import Gateway
from service.core.requests import make_request
from service.errors import NotFound
from service.http.oip_tensors import (
    HEADER_LENGTH,
    decode_request,
    encode_outputs,
    parameters_of,
    requested_outputs,
)
from service.http.responses import guarded, json_response
from service.recording.jobs import Job


def server_metadata() -> dict[str, Any]:
    """GET /v2."""
    from importlib.metadata import version

    return {
        "name": "ensemble-gateway",
        "version": version("ensemble-gateway"),
        "extensions": ["binary_tensor_data"],
    }


def _check_model(gateway: Gateway, model: str, version: str | None) -> None:
    repo = gateway.repo
    known = [repo.manifest.name, *repo.variants]
    if model not in known:
        raise NotFound(f"model {model!r} not found; models: {', '.join(known)}")
    if version is not None and version != str(repo.manifest.version):
        raise NotFound(
            f"model {model!r} version {version!r} not loaded; serving version {repo.manifest.version}"
        )


def model_metadata(gateway: Gateway, model: str, version: str | None) -> dict[str, Any]:
    """GET /v2/models/{model}[/versions/{version}]."""
    _check_model(gateway, model, version)
    m = gateway.repo.manifest
    inputs = [
        {"name": c.name, "datatype": "FP32" if c.kind == "numeric" else "BYTES", "shape": [-1, 1]}
        for c in m.inputs
    ]
    if m.task == "regression":
        outputs = [{"name": "value", "datatype": "FP32", "shape": [-1]}]
    else:
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "label_index", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(m.classes)]},
        ]
    return {
        "name": model,
        "versions": [str(m.version)],
        "platform": "onnxruntime",
        "inputs": inputs,
        "outputs": outputs,
    }


def model_ready(gateway: Gateway, model: str, version: str | None) -> bool:
    """GET /v2/models/{model}/ready: raises NotFound for unknown models."""
    _check_model(gateway, model, version)
    return gateway.ready


def infer(
    gateway: Gateway, model: str, version: str | None, body: bytes, headers: dict[str, str]
) -> tuple[bytes, dict[str, str], Job]:
    """POST /v2/models/{model}[/versions/{version}]/infer -> (body, headers, the answered job).

    Everything is checked (model, inputs, parameters, id, requested outputs) before the request is
    answered, so a refused request is never recorded."""
    _check_model(gateway, model, version)
    repo, router = gateway.repo, gateway.router
    m = repo.manifest
    request, feeds, rows = decode_request(m, gateway.settings.max_batch_rows, body, headers)
    params = parameters_of(request, "")
    selected = requested_outputs(request, m)
    predict = make_request(
        feeds,
        rows,
        body_id=request.get("id"),
        header_id=headers.get("x-request-id"),
        variant=None if model == m.name else model,
        routing_key=params.get("routing_key"),
        id_field="id",
        key_field="parameters.routing_key",
    )
    job = gateway.answer(repo, router, predict)
    outputs, blobs = encode_outputs(m, job.output, rows, selected)
    response = {
        "model_name": model,
        "model_version": str(m.version),
        "id": job.request_id,
        "parameters": {"variant": job.variant, "role": job.role},
        "outputs": outputs,
    }
    head = orjson.dumps(response)
    if not blobs:
        return head, {"content-type": "application/json", "x-request-id": job.request_id}, job
    return (
        head + b"".join(blobs),
        {
            "content-type": "application/octet-stream",
            HEADER_LENGTH: str(len(head)),
            "x-request-id": job.request_id,
        },
        job,
    )


def oip_routes(gateway: Gateway) -> list[Route]:
    """The OIP health and metadata routes (infer is a hot route: service/http/hot.py)."""

    async def v2_live(request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(request: Request) -> Response:
        return json_response({"ready": gateway.ready}, status=200 if gateway.ready else 503)

    async def v2_server(request: Request) -> Response:
        return json_response(server_metadata())

    async def v2_model(request: Request) -> Response:
        p = request.path_params
        return json_response(model_metadata(gateway, p["model"], p.get("version")))

    async def v2_model_ready(request: Request) -> Response:
        p = request.path_params
        ready = model_ready(gateway, p["model"], p.get("version"))
        return json_response({"name": p["model"], "ready": ready}, status=200 if ready else 503)

    return [
        Route("/v2", guarded("oip_metadata", v2_server), methods=["GET"]),
        Route("/v2/health/live", guarded("oip_health", v2_live), methods=["GET"]),
        Route("/v2/health/ready", guarded("oip_health", v2_ready), methods=["GET"]),
        Route("/v2/models/{model}", guarded("oip_metadata", v2_model), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", guarded("oip_metadata", v2_model), methods=["GET"]),
        Route("/v2/models/{model}/ready", guarded("oip_health", v2_model_ready), methods=["GET"]),
        Route(
            "/v2/models/{model}/versions/{version}/ready",
            guarded("oip_health", v2_model_ready),
            methods=["GET"],
        ),
    ]
