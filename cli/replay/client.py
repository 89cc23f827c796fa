"""`gateway replay`: rows of a table as live traffic, with labels posted back after a delay.

Each row is sent as its own request (JSON API or OIP) at a target rate; its true label is held back
and posted to /feedback after ``label_delay`` seconds, for a ``label_fraction`` share of rows (in
production some labels never arrive). Server failures (refused connections, 5xx, timeouts) are
counted, never fatal, and every wait is bounded, so a replay always ends.
"""

from __future__ import annotations

import asyncio
import heapq
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd

REQUEST_TIMEOUT_S = 5.0


class ReplayError(Exception):
    """Bad replay input (table, columns, options) or a server we cannot describe: exit code 2."""


@dataclass
class ReplayStats:
    """What a replay did."""

    sent: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    labels_posted: int = 0
    labels_joined: int = 0
    labels_rejected: int = 0
    scored: int = 0
    correct: int = 0
    abs_error: float = 0.0
    variants: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def live_metric(self) -> str:
        if not self.scored:
            return "–"
        if self.correct or not self.abs_error:
            return f"acc {self.correct / self.scored:.3f}"
        return f"MAE {self.abs_error / self.scored:.3g}"

    def line(self) -> str:
        errors = sum(self.errors.values())
        return (
            f"sent {self.sent}  answered {self.answered}  errors {errors}  labels posted "
            f"{self.labels_posted} (joined {self.labels_joined})  live {self.live_metric()} of served"
        )


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


async def run(
    url: str,
    plan: Plan,
    schema: Schema,
    *,
    rps: float,
    duration: float | None,
    label_delay: float,
    label_fraction: float,
    oip: bool,
    seed: int = 0,
    concurrency: int = 8,
    progress: Callable[[ReplayStats], None] | None = None,
    progress_every: float = 2.0,
) -> ReplayStats:
    """Send the plan; post labels after the delay; return the counts."""
    rng = np.random.default_rng(seed)
    stats = ReplayStats()
    pending: list[tuple[float, int, str, Any, Any]] = []  # (due, seq, request_id, label, served label)
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    total = len(plan.records)
    deadline = started + (duration if duration is not None else total / rps + 60)
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:

        async def send_one(i: int) -> None:
            rid = f"replay-{run_id}-{i}"
            rec = plan.records[i % total]
            stats.sent += 1
            try:
                if oip:
                    body, headers = oip_body(rec, schema, rid)
                    r = await client.post(f"/v2/models/{schema.model}/infer", content=body, headers=headers)
                else:
                    payload: dict[str, Any] = {"records": [rec], "request_id": rid}
                    key = plan.keys[i % total]
                    if key is not None:
                        payload["routing_key"] = key
                    r = await client.post(
                        "/predict",
                        content=orjson.dumps(payload),
                        headers={"content-type": "application/json"},
                    )
            except httpx.ConnectError:
                stats.errors["refused"] += 1
                return
            except httpx.TimeoutException:
                stats.errors["timeout"] += 1
                return
            except httpx.HTTPError as exc:
                stats.errors[type(exc).__name__] += 1
                return
            if r.status_code >= 500:
                stats.errors["5xx"] += 1
                return
            if r.status_code >= 400:
                stats.errors["4xx"] += 1
                return
            stats.answered += 1
            served = _served_answer(r, oip)
            stats.variants[served[0]] += 1
            if rng.random() < label_fraction:
                heapq.heappush(
                    pending, (time.monotonic() + label_delay, i, rid, plan.labels[i % total], served[1])
                )

        async def worker() -> None:
            nonlocal next_index
            while True:
                i = next_index
                if (duration is None and i >= total) or time.monotonic() >= deadline:
                    return
                next_index += 1
                wait = started + i / rps - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() >= deadline:
                    return
                await send_one(i)

        async def post_due(force: bool = False) -> None:
            now = time.monotonic()
            due: list[tuple[float, int, str, Any, Any]] = []
            while pending and (force or pending[0][0] <= now) and len(due) < 2000:
                due.append(heapq.heappop(pending))
            if not due:
                return
            labels = [{"request_id": rid, "row": 0, "label": _jsonable(label)} for _, _, rid, label, _ in due]
            try:
                r = await client.post(
                    "/feedback",
                    content=orjson.dumps({"labels": labels}),
                    headers={"content-type": "application/json"},
                    timeout=30,
                )
            except httpx.HTTPError as exc:
                stats.errors[f"feedback {type(exc).__name__}"] += 1
                return
            if r.status_code != 200:
                stats.errors[f"feedback {r.status_code}"] += 1
                return
            counts = r.json()
            stats.labels_posted += len(labels)
            stats.labels_joined += counts.get("joined", 0)
            stats.labels_rejected += counts.get("invalid_label", 0) + counts.get("unknown_id", 0)
            for _, _, _, label, served_label in due:
                stats.scored += 1
                if schema.task == "regression":
                    stats.abs_error += abs(float(served_label) - float(label))
                else:
                    stats.correct += str(served_label) == str(label)

        async def labeller(done: asyncio.Event) -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.25)
                await post_due()
                if progress is not None and time.monotonic() - last >= progress_every:
                    last = time.monotonic()
                    progress(stats)

        done = asyncio.Event()
        label_task = asyncio.create_task(labeller(done))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        # Labels still held back: wait out their delay (bounded), then post whatever is left.
        end_wait = time.monotonic() + label_delay + 1
        while pending and time.monotonic() < end_wait:
            await asyncio.sleep(0.1)
        done.set()
        await label_task
        while pending:
            before = len(pending)
            await post_due(force=True)
            if len(pending) == before:
                break
    stats.seconds = time.monotonic() - started
    if progress is not None:
        progress(stats)
    return stats


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _served_answer(r: httpx.Response, oip: bool) -> tuple[str, Any]:
    """(variant, label or value) from a prediction response."""
    if not oip:
        body = r.json()
        pred = body["predictions"][0]
        return body["variant"], pred.get("label", pred.get("value"))
    hlen = r.headers.get("inference-header-content-length")
    body = orjson.loads(r.content[: int(hlen)] if hlen else r.content)
    outputs = {o["name"]: o for o in body["outputs"]}
    first = outputs.get("label") or outputs.get("value")
    value = first["data"][0] if first and "data" in first else None
    return body["parameters"]["variant"], value
