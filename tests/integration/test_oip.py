"""Open Inference Protocol v2 in-process: metadata, infer (JSON and binary), errors."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from service.core.gateway import Gateway
from tests.helpers import ledger_count


def oip_inputs(records: list[dict[str, Any]], gateway: Gateway) -> list[dict[str, Any]]:
    """JSON OIP tensors, one per column; missing numbers cannot be sent in JSON, so rows need values."""
    out = []
    for c in gateway.repo.manifest.inputs:
        values = [r[c.name] for r in records]
        if c.kind == "numeric":
            out.append({"name": c.name, "shape": [len(records), 1], "datatype": "FP32", "data": values})
        else:
            out.append(
                {
                    "name": c.name,
                    "shape": [len(records)],
                    "datatype": "BYTES",
                    "data": [v or "" for v in values],
                }
            )
    return out


@pytest.fixture
def complete_records(feature_records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in feature_records if all(v is not None for v in r.values())][:5]


def test_health_and_metadata(client: Any, gateway: Gateway) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    name = gateway.repo.manifest.name
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["versions"] == [str(gateway.repo.manifest.version)]
    assert [i["name"] for i in meta["inputs"]] == [c.name for c in gateway.repo.manifest.inputs]
    assert client.get(f"/v2/models/{name}/versions/1/ready").json()["ready"] is True
    assert client.get("/v2/models/stack").status_code == 200


def test_infer_json_matches_predict(
    client: Any, gateway: Gateway, complete_records: list[dict[str, Any]]
) -> None:
    name = gateway.repo.manifest.name
    r = client.post(
        f"/v2/models/{name}/infer", json={"id": "oip-1", "inputs": oip_inputs(complete_records, gateway)}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "oip-1" and r.headers["x-request-id"] == "oip-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    via_json = client.post(
        "/predict", json={"records": complete_records, "variant": body["parameters"]["variant"]}
    )
    assert outputs["label"]["data"] == [str(p["label"]) for p in via_json.json()["predictions"]]
    assert outputs["probabilities"]["shape"] == [5, len(gateway.repo.manifest.classes)]


def test_infer_member_by_name_and_version(
    client: Any, gateway: Gateway, complete_records: list[dict[str, Any]]
) -> None:
    r = client.post(
        "/v2/models/vote/versions/1/infer", json={"inputs": oip_inputs(complete_records, gateway)}
    )
    assert r.status_code == 200 and r.json()["parameters"]["variant"] == "vote"
    r = client.post(
        "/v2/models/vote/versions/9/infer", json={"inputs": oip_inputs(complete_records, gateway)}
    )
    assert r.status_code == 404 and "version" in r.json()["error"]
    r = client.post("/v2/models/ghost/infer", json={"inputs": oip_inputs(complete_records, gateway)})
    assert r.status_code == 404 and "ghost" in r.json()["error"]


def test_infer_binary_tensors_both_ways(
    client: Any, gateway: Gateway, complete_records: list[dict[str, Any]]
) -> None:
    n = len(complete_records)
    inputs, blobs = [], []
    for c in gateway.repo.manifest.inputs:
        values = [r[c.name] for r in complete_records]
        if c.kind == "numeric":
            blob = np.asarray(values, dtype="<f4").tobytes()
            inputs.append(
                {
                    "name": c.name,
                    "shape": [n, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        else:
            blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            inputs.append(
                {
                    "name": c.name,
                    "shape": [n, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        blobs.append(blob)
    head = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    # No Content-Type, like tritonclient.
    r = client.post(
        f"/v2/models/{gateway.repo.manifest.name}/infer",
        content=head + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 200, r.text
    hlen = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:hlen])
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in meta["outputs"]}
    offset = hlen + sizes["label"] + sizes["label_index"]
    proba = np.frombuffer(r.content[offset : offset + sizes["probabilities"]], dtype="<f4").reshape(n, -1)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b.update(inputs=[]), "inputs: expected a non-empty list"),
        (lambda b: b["inputs"].pop(), "missing"),
        (lambda b: b["inputs"][0].update(name="nope"), "inputs[0].name"),
        (lambda b: b["inputs"][0].update(shape=[5, 2]), "inputs[0].shape"),
        (lambda b: b["inputs"][0].update(shape=[4, 1]), "inputs[1].shape: expected 4 rows"),
        (lambda b: b["inputs"][0].update(datatype="BYTES"), "inputs[0].datatype"),
        (lambda b: b["inputs"][0].update(data=[1, 2]), "inputs[0].data: expected 5 elements"),
        (lambda b: b["inputs"][0].update(data=["a"] * 5), "inputs[0].data: expected finite numbers"),
        (lambda b: b.update(outputs=[{"name": "nope"}]), "outputs[0].name"),
        (lambda b: b.update(id=""), "id: expected 1-128 printable ASCII"),
        (lambda b: b.update(parameters=False), "parameters: expected an object"),
        (
            lambda b: b.update(parameters={"binary_data_output": "yes"}),
            "parameters.binary_data_output: expected true",
        ),
        (lambda b: b["inputs"][0].update(parameters=[]), "inputs[0].parameters: expected an object"),
        (
            lambda b: b.update(outputs=[{"name": "label", "parameters": {"binary_data": 1}}]),
            "outputs[0].parameters.binary_data",
        ),
    ],
)
def test_infer_bad_tensors_are_400(
    client: Any, gateway: Gateway, complete_records: list[dict[str, Any]], mutate: Any, fragment: str
) -> None:
    body: dict[str, Any] = {"inputs": oip_inputs(complete_records, gateway)}
    mutate(body)
    r = client.post(f"/v2/models/{gateway.repo.manifest.name}/infer", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_infer_malformed_binary_header_is_400(client: Any, gateway: Gateway) -> None:
    name = gateway.repo.manifest.name
    r = client.post(
        f"/v2/models/{name}/infer",
        content=b'{"inputs": []}',
        headers={"Inference-Header-Content-Length": "999"},
    )
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    r = client.post(f"/v2/models/{name}/infer", content=b"not json")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]


def test_a_binary_chunk_that_is_not_whole_elements_is_refused_and_not_recorded(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    columns = gateway.repo.manifest.inputs
    inputs, blobs = [], []
    for c in columns:
        value = feature_records[0][c.name]
        if c.kind == "numeric":
            blob = struct.pack("<f", float(value))[:3] if not blobs else struct.pack("<f", float(value))
            inputs.append(
                {
                    "name": c.name,
                    "shape": [1, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        else:
            blob = struct.pack("<I", len(str(value).encode())) + str(value).encode()
            inputs.append(
                {
                    "name": c.name,
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
        blobs.append(blob)
    head = orjson.dumps({"id": "half-float", "inputs": inputs})
    r = client.post(
        f"/v2/models/{gateway.repo.manifest.name}/infer",
        content=head + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"], r.text
    assert gateway.recording.barrier()
    assert ledger_count(gateway.settings.ledger_path, "request_id = 'half-float'") == 0


@pytest.mark.parametrize("rid", ["é", "a\r\nb", "x" * 129, "tab\there"])
def test_request_ids_that_cannot_go_back_in_a_header_are_400(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]], rid: str
) -> None:
    r = client.post("/predict", json={"records": feature_records[:1], "request_id": rid})
    assert r.status_code == 400 and "request_id" in r.json()["error"]
    assert gateway.recording.barrier()
    assert ledger_count(gateway.settings.ledger_path) == 0
