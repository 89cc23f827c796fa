"""Connection bounds of a real `bentoml serve` (service/connections.py): half-sent and silent
connections are closed at the header deadline while a burst of new connections is served, and a
worker over its connection cap answers 503 `overloaded` (nothing recorded) until connections drain."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.connections import raise_descriptor_limit
from tests.helpers import BuiltRepo, Server, ledger_count, scraped, start_server, stop_server, wait_until

pytestmark = pytest.mark.slow
HEADER_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 400
PARTIAL = b"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def bounded(built_repo: BuiltRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    raise_descriptor_limit()  # this process opens hundreds of sockets too
    folder = tmp_path_factory.mktemp("bounded")
    ledger = folder / "ledger.sqlite"
    env = {
        "GATEWAY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GATEWAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "GATEWAY_LEDGER_FLUSH_INTERVAL_S": "0.05",
    }
    server = start_server(built_repo.root, folder / "s.log", ledger=ledger, extra_env=env)
    yield server, ledger
    stop_server(server)


def _request(record: dict[str, Any], request_id: str) -> bytes:
    body = json.dumps({"records": [record], "request_id": request_id}).encode()
    head = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    return PARTIAL + head + body


async def _exchange(port: int, data: bytes) -> tuple[float, bytes]:
    """One request on a new connection: (seconds to the whole answer, the answer)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return time.perf_counter() - start, answer


async def _open(port: int, n: int, first: bytes) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    held = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if first:
            writer.write(first)
        held.append((reader, writer))
    return held


async def _closed_by_server(held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> list[bytes]:
    """What the server sent on each held connection before closing it (fails if one stays open)."""
    answers = [await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_S + 5) for reader, _ in held]
    for _, writer in held:
        writer.close()
    return answers


def test_half_sent_and_silent_connections_are_closed_while_a_burst_is_served(
    bounded: tuple[Server, Path], feature_records: list[dict[str, Any]]
) -> None:
    server, ledger = bounded
    before = scraped(
        httpx.get(f"{server.url}/metrics").text, 'gateway_connections_closed_total{reason="header_timeout"}'
    )
    recorded_before = ledger_count(ledger)

    async def scenario() -> tuple[list[bytes], list[bytes], list[tuple[float, bytes]], float]:
        half = await _open(server.port, 200, PARTIAL)
        silent = await _open(server.port, 50, b"")
        opened = time.perf_counter()
        burst = await asyncio.gather(
            *(_exchange(server.port, _request(feature_records[i % 20], f"burst-{i}")) for i in range(100))
        )
        half_answers = await _closed_by_server(half)
        silent_answers = await _closed_by_server(silent)
        return half_answers, silent_answers, burst, time.perf_counter() - opened

    half_answers, silent_answers, burst, elapsed = asyncio.run(scenario())
    assert all(answer.startswith(b"HTTP/1.1 200") for _, answer in burst), {a[:12] for _, a in burst}
    latencies = sorted(seconds for seconds, _ in burst)
    assert latencies[-1] < HEADER_TIMEOUT_S, "the burst was served while 250 idle connections were held"
    assert all(a.startswith(b"HTTP/1.1 408") and b"did not arrive within" in a for a in half_answers)
    assert silent_answers == [b""] * 50, "a connection that sent nothing is closed without a response"
    assert elapsed < HEADER_TIMEOUT_S + 3
    text = httpx.get(f"{server.url}/metrics").text
    closed = scraped(text, 'gateway_connections_closed_total{reason="header_timeout"}') - before
    assert closed == 250
    wait_until(lambda: ledger_count(ledger) == recorded_before + 100, 10, "the burst's rows in the ledger")


def test_a_keep_alive_connection_gets_the_same_header_deadline(
    bounded: tuple[Server, Path], feature_records: list[dict[str, Any]]
) -> None:
    server, _ = bounded

    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        keep = _request(feature_records[0], "keep-1").replace(b"Connection: close\r\n", b"")
        writer.write(keep)
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        headers = {}
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers["content-length"]))
        writer.write(b"POST /predict HTTP/1.1\r\n")  # then nothing more
        answer = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_S + 5)
        writer.close()
        return answer

    assert asyncio.run(scenario()).startswith(b"HTTP/1.1 408")


def test_over_the_connection_cap_requests_get_503_overloaded_and_nothing_is_recorded(
    bounded: tuple[Server, Path], feature_records: list[dict[str, Any]]
) -> None:
    server, ledger = bounded
    metrics_before = httpx.get(f"{server.url}/metrics").text
    refused_before = scraped(metrics_before, 'gateway_connections_closed_total{reason="over_limit"}')

    async def scenario() -> list[tuple[float, bytes]]:
        held = await _open(server.port, MAX_CONNECTIONS, b"")
        answers = await asyncio.gather(
            *(_exchange(server.port, _request(feature_records[0], f"over-{i}")) for i in range(20))
        )
        await _closed_by_server(held)
        return answers

    answers = asyncio.run(scenario())
    assert all(a.startswith(b"HTTP/1.1 503") for _, a in answers), {a[:12] for _, a in answers}
    head, _, body = answers[0][1].partition(b"\r\n\r\n")
    assert b"retry-after: 1" in head.lower() and json.loads(body)["error"].startswith("overloaded")
    text = httpx.get(f"{server.url}/metrics").text
    assert scraped(text, 'gateway_connections_closed_total{reason="over_limit"}') - refused_before == 20
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert (
            c.post("/predict", json={"records": feature_records[:1], "request_id": "after-cap"}).status_code
            == 200
        )
    wait_until(lambda: ledger_count(ledger, "request_id = 'after-cap'") > 0, 10, "the request after the cap")
    assert ledger_count(ledger, "request_id LIKE 'over-%'") == 0, "refused requests are not recorded"
