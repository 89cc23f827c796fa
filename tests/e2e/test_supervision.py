"""Supervision of a real `bentoml serve`: a worker whose supervisor is killed -9 flushes what it
holds and exits (no orphan answering on the port), and `gateway serve` names a port that is taken."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers import BuiltRepo, ledger_count, serve_refusal, start_server, stop_server, wait_until

pytestmark = pytest.mark.slow


def test_workers_flush_and_exit_when_their_supervisor_is_killed(
    built_repo: BuiltRepo, tmp_path: Path, feature_records: list[dict[str, Any]]
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    server = start_server(
        built_repo.root,
        tmp_path / "s.log",
        ledger=ledger,
        extra_env={"GATEWAY_LEDGER_FLUSH_INTERVAL_S": "30"},
    )
    try:
        workers = server.managed.descendants()
        assert workers, "bentoml serve started worker processes"
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for i in range(25):
                assert (
                    c.post(
                        "/predict", json={"records": feature_records[:1], "request_id": f"o-{i}"}
                    ).status_code
                    == 200
                )
        os.kill(server.managed.process.pid, signal.SIGKILL)  # the supervisor only
        server.managed.process.wait()

        def gone() -> bool:
            return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)

        wait_until(gone, 15, "the orphaned workers to exit")
        # The flush interval is 30 s: only the orphaned worker's own flush can have written these.
        assert ledger_count(ledger) == 25
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health", timeout=2)
    finally:
        stop_server(server)


def test_serve_names_a_taken_port_in_one_line(built_repo: BuiltRepo) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = serve_refusal(built_repo.root, "--port", str(port))
    assert f"127.0.0.1:{port}" in line and "in use" in line, line
