"""What a replay sends: the server's schema (GET /models), rows as JSON records or OIP bodies, the plan."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pandas as pd

REQUEST_TIMEOUT_S = 5.0


class ReplayError(Exception):
    """Bad replay input (table, columns, options) or a server we cannot describe: exit code 2."""


@dataclass
class Schema:
    """What the server expects, from GET /models."""

    model: str
    task: str
    inputs: list[dict[str, Any]]
    classes: list[Any]


def fetch_schema(url: str) -> Schema:
    """GET /models; a server we cannot reach or read is a ReplayError."""
    try:
        r = httpx.get(f"{url}/models", timeout=REQUEST_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ReplayError(f"--url {url}: cannot reach the gateway ({type(exc).__name__})") from exc
    if r.status_code != 200:
        raise ReplayError(f"--url {url}: GET /models answered {r.status_code}: {r.text[:200]}")
    body = r.json()
    return Schema(model=body["model"], task=body["task"], inputs=body["inputs"], classes=body["classes"])


def records_from(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    """JSON records with exactly the schema's columns (NaN -> null)."""
    missing = [c["name"] for c in schema.inputs if c["name"] not in frame.columns]
    if missing:
        raise ReplayError(f"--data: column {missing[0]!r} of the model's input schema is not in the table")
    out = []
    cols = [(c["name"], c["kind"]) for c in schema.inputs]
    values = {name: frame[name].tolist() for name, _ in cols}
    for i in range(len(frame)):
        rec: dict[str, Any] = {}
        for name, kind in cols:
            v = values[name][i]
            if v is None or (isinstance(v, float) and v != v):
                rec[name] = None
            elif kind == "numeric":
                rec[name] = float(v)
            else:
                rec[name] = str(v)
        out.append(rec)
    return out


def oip_body(record: dict[str, Any], schema: Schema, request_id: str) -> tuple[bytes, dict[str, str]]:
    """One row as an OIP request: numbers as binary FP32 (NaN = missing), text as JSON BYTES."""
    inputs, blobs = [], []
    for c in schema.inputs:
        v = record[c["name"]]
        if c["kind"] == "numeric":
            blob = struct.pack("<f", float("nan") if v is None else v)
            inputs.append(
                {
                    "name": c["name"],
                    "shape": [1, 1],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
            blobs.append(blob)
        else:
            inputs.append({"name": c["name"], "shape": [1, 1], "datatype": "BYTES", "data": [v or ""]})
    head = orjson.dumps({"id": request_id, "inputs": inputs})
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


@dataclass
class Plan:
    """Rows to send, in order, with their labels and routing keys."""

    records: list[dict[str, Any]]
    labels: list[Any]
    keys: list[str | None]
