"""`gateway replay`: rows of a table as live traffic, with labels posted back after a delay.

Each row is sent as its own request (JSON API or OIP) at a target rate; its true label is held back
and posted to /feedback after ``label_delay`` seconds, for a ``label_fraction`` share of rows (in
production some labels never arrive). Server failures (refused connections, 5xx, timeouts) are
counted, never fatal, and every wait is bounded, so a replay always ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from cli.replay.traffic import REQUEST_TIMEOUT_S, Plan, Schema, oip_body


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


Pending = tuple[float, int, str, Any, Any, int]
"""A label held back: (due time, sequence, request id, true label, the served answer, the replica
that answered)."""


class _Replay:
    """One replay's state: the plan, the client, the labels held back, the counts."""

    def __init__(
        self,
        clients: list[httpx.AsyncClient],
        plan: Plan,
        schema: Schema,
        *,
        label_delay: float,
        label_fraction: float,
        oip: bool,
        seed: int,
    ) -> None:
        self.clients, self.plan, self.schema = clients, plan, schema
        self.label_delay, self.label_fraction, self.oip = label_delay, label_fraction, oip
        self.rng = np.random.default_rng(seed)
        self.stats = ReplayStats()
        self.pending: list[Pending] = []
        self.run_id = uuid.uuid4().hex[:8]

    async def _post(self, i: int, rid: str) -> httpx.Response:
        rec = self.plan.records[i % len(self.plan.records)]
        client = self.clients[i % len(self.clients)]  # replicas take turns
        if self.oip:
            body, headers = oip_body(rec, self.schema, rid)
            return await client.post(f"/v2/models/{self.schema.model}/infer", content=body, headers=headers)
        payload: dict[str, Any] = {"records": [rec], "request_id": rid}
        key = self.plan.keys[i % len(self.plan.keys)]
        if key is not None:
            payload["routing_key"] = key
        return await client.post(
            "/predict", content=orjson.dumps(payload), headers={"content-type": "application/json"}
        )

    async def send_one(self, i: int) -> None:
        """One row as one request; its label held back for later (for label_fraction of rows)."""
        rid = f"replay-{self.run_id}-{i}"
        stats = self.stats
        stats.sent += 1
        try:
            r = await self._post(i, rid)
        except httpx.ConnectError:
            stats.errors["refused"] += 1
            return
        except httpx.TimeoutException:
            stats.errors["timeout"] += 1
            return
        except httpx.HTTPError as exc:
            stats.errors[type(exc).__name__] += 1
            return
        if r.status_code >= 400:
            stats.errors["5xx" if r.status_code >= 500 else "4xx"] += 1
            return
        stats.answered += 1
        variant, answer = _served_answer(r, self.oip)
        stats.variants[variant] += 1
        if self.rng.random() < self.label_fraction:
            label = self.plan.labels[i % len(self.plan.labels)]
            replica = i % len(self.clients)
            heapq.heappush(
                self.pending, (time.monotonic() + self.label_delay, i, rid, label, answer, replica)
            )

    async def post_due(self, force: bool = False) -> None:
        """Post the labels whose delay has passed (all of them with ``force``), up to 2,000 at once."""
        now = time.monotonic()
        due: list[Pending] = []
        while self.pending and (force or self.pending[0][0] <= now) and len(due) < 2000:
            due.append(heapq.heappop(self.pending))
        # With several replicas, a label goes to the replica after the one that answered: the join
        # must not depend on which replica a label reaches.
        by_target: dict[int, list[Pending]] = {}
        for item in due:
            by_target.setdefault((item[5] + 1) % len(self.clients), []).append(item)
        for target, items in by_target.items():
            await self._post_labels(self.clients[target], items)

    async def _post_labels(self, client: httpx.AsyncClient, due: list[Pending]) -> None:
        labels = [{"request_id": rid, "row": 0, "label": _jsonable(label)} for _, _, rid, label, _, _ in due]
        stats = self.stats
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
        for _, _, _, label, served, _ in due:
            stats.scored += 1
            if self.schema.task == "regression":
                stats.abs_error += abs(float(served) - float(label))
            else:
                stats.correct += str(served) == str(label)


async def run(
    urls: str | list[str],
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
    """Send the plan at ``rps`` from ``concurrency`` senders; post labels after the delay; return the
    counts. Several ``urls`` (replicas) take requests in turn; each label goes to the next replica
    after the one that answered. Every wait is bounded, so a replay always ends."""
    urls = [urls] if isinstance(urls, str) else urls
    started = time.monotonic()
    total = len(plan.records)
    deadline = started + (duration if duration is not None else total / rps + 60)
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=u, timeout=REQUEST_TIMEOUT_S, limits=limits)
            )
            for u in urls
        ]
        replay = _Replay(
            clients, plan, schema, label_delay=label_delay, label_fraction=label_fraction, oip=oip, seed=seed
        )

        async def sender() -> None:
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
                await replay.send_one(i)

        async def labeller(done: asyncio.Event) -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.25)
                await replay.post_due()
                if progress is not None and time.monotonic() - last >= progress_every:
                    last = time.monotonic()
                    progress(replay.stats)

        done = asyncio.Event()
        label_task = asyncio.create_task(labeller(done))
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        # Labels still held back: wait out their delay (bounded), then post whatever is left.
        end_wait = time.monotonic() + label_delay + 1
        while replay.pending and time.monotonic() < end_wait:
            await asyncio.sleep(0.1)
        done.set()
        await label_task
        while replay.pending:
            before = len(replay.pending)
            await replay.post_due(force=True)
            if len(replay.pending) == before:
                break
    replay.stats.seconds = time.monotonic() - started
    if progress is not None:
        progress(replay.stats)
    return replay.stats


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
