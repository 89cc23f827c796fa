"""Fixtures of the end-to-end tests: a real `bentoml serve` of the churn repository, and a check that
every server a test started is gone at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import BuiltRepo, Server, our_servers, start_server, stop_server


@pytest.fixture(scope="module")
def server(built_repo: BuiltRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(built_repo.root, tmp_path_factory.mktemp("server") / "bentoml.log")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session", autouse=True)
def no_leaked_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every server a test starts must be gone at the end, workers included."""
    import time

    basetemp = tmp_path_factory.getbasetemp()
    yield
    deadline = time.monotonic() + 15
    leaked = our_servers(basetemp)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.5)
        leaked = our_servers(basetemp)
    assert not leaked, f"server processes left running: {sorted(leaked)}"
