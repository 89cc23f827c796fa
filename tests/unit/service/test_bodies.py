"""Request bodies: a stalled upload is cut off with 408 instead of holding its connection."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from service.errors import BodyTimeout
from service.http.bodies import read_body


def test_a_half_sent_body_times_out() -> None:
    async def stalled() -> dict[str, Any]:
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b'{"rec', "more_body": True}
        await anyio.sleep(60)  # the rest never comes
        return {"type": "http.request", "body": b""}

    sent: list[int] = []
    scope = {"headers": [(b"content-length", b"100")]}
    start = time.monotonic()
    with pytest.raises(BodyTimeout, match=r"body: expected the whole body within 0.2 s") as err:
        anyio.run(read_body, scope, stalled, 1000, 0.2)
    assert err.value.status == 408
    assert time.monotonic() - start < 5


def test_a_whole_body_in_chunks_is_read() -> None:
    chunks = [b'{"a"', b": 1}"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    assert anyio.run(read_body, {"headers": []}, receive, 1000, 1.0) == b'{"a": 1}'
