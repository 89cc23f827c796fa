"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the same POST as soon
as its previous answer is complete (uvloop + httptools, raw sockets: no client library in the loop).

Runs in its own process (benchmarks/run.py starts it), so it never shares an interpreter with a
server; prints one JSON document: latencies (s) of the answers completed inside the measured window,
the window length and the error count. Used where `hey` is missing, and as a cross-check of hey.

    python benchmarks/loadgen.py --port 8000 --path /predict --body body.json --connections 8 \
        --warmup 3 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import httptools


class Shared:
    """Measurement state shared by the connections of one run."""

    def __init__(self, measure_from: float, measure_to: float) -> None:
        self.measure_from = measure_from
        self.measure_to = measure_to
        self.latencies: list[float] = []
        self.errors = 0
        self.stopping = False


class Connection(asyncio.Protocol):
    """One keep-alive connection in a closed loop."""

    def __init__(self, request: bytes, shared: Shared, done: asyncio.Future[None]) -> None:
        self.request = request
        self.shared = shared
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.sent_at = 0.0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; only write() and close() are used.
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.shared.errors += 1
            self._finish()

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        s = self.shared
        if s.measure_from <= now <= s.measure_to:
            if 200 <= self.parser.get_status_code() < 300:
                s.latencies.append(now - self.sent_at)
            else:
                s.errors += 1
        if now >= s.measure_to or s.stopping:
            self._finish()
            return
        if not self.parser.should_keep_alive():
            self.shared.errors += 1
            self._finish()
            return
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if not self.shared.stopping:
                self.shared.errors += 1
            self.done.set_result(None)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def run(
    host: str, port: int, path: str, body: bytes, connections: int, warmup_s: float, duration_s: float
) -> dict[str, object]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    request = head + body
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    shared = Shared(start + warmup_s, start + warmup_s + duration_s)
    futures: list[asyncio.Future[None]] = []
    for _ in range(connections):
        fut: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(functools.partial(Connection, request, shared, fut), host, port)
        futures.append(fut)
    try:
        await asyncio.wait_for(asyncio.gather(*futures), timeout=warmup_s + duration_s + 30)
    except TimeoutError:
        shared.stopping = True
    window = min(time.perf_counter(), shared.measure_to) - shared.measure_from
    return {"latencies_s": shared.latencies, "window_s": window, "errors": shared.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    coro = run(
        args.host, args.port, args.path, args.body.read_bytes(), args.connections, args.warmup, args.duration
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the project venv has uvloop
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
