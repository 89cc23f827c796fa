"""Service fixtures: one small real repository (mixed numeric/categorical table with missing values,
built once per session), an in-process gateway, and a real `bentoml serve` process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from service.gateway import Gateway
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"


def mixed_frame(n: int = 420, seed: int = 0) -> pd.DataFrame:
    """A churn-like table: numeric and text columns, missing values, an index column to drop."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    income = rng.lognormal(10, 0.5, n)
    city = rng.choice(["paris", "lyon", "nice"], n).astype(object)
    plan = rng.choice(["basic", "pro"], n).astype(object)
    logit = 0.08 * (age - 40) + 1.2 * (plan == "pro") - 0.7 * (city == "nice") + rng.normal(0, 1, n)
    target = np.where(logit > 0.3, "churn", "stay")
    age[rng.random(n) < 0.05] = np.nan
    city[rng.random(n) < 0.05] = None
    return pd.DataFrame(
        {
            "row_id": np.arange(n),
            "age": age,
            "monthly income": income,
            "city": city,
            "plan": plan,
            "target": target,
        }
    )


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready records (NaN -> None)."""
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()})
    return out


@dataclass(frozen=True)
class BuiltRepo:
    root: Path
    version: Path
    csv: Path


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepo:
    from builders.build import BuildOptions, run_build

    base = tmp_path_factory.mktemp("svc")
    csv = base / "churn.csv"
    mixed_frame().to_csv(csv, index=False)
    result = run_build(
        BuildOptions(
            data=csv,
            target="target",
            out=base / "models",
            name="churn",
            budget=2,
            families=["tree", "naive_bayes", "hist_gb"],
            fp_cost=1.0,
            fn_cost=3.0,
            learning_curves=False,
        )
    )
    return BuiltRepo(root=base / "models", version=result.path, csv=csv)


@pytest.fixture(scope="session")
def feature_records(built_repo: BuiltRepo) -> list[dict[str, Any]]:
    frame = pd.read_csv(built_repo.csv).drop(columns=["target", "row_id"])
    return to_records(frame)


@pytest.fixture
def settings(built_repo: BuiltRepo, tmp_path: Path) -> Settings:
    return Settings(
        repository=built_repo.root,
        admin_token=ADMIN_TOKEN,
        max_batch_rows=64,
        max_body_bytes=64_000,
        ledger_path=tmp_path / "ledger.sqlite",
        ledger_flush_interval_s=0.05,
    )


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    gw = Gateway(settings)
    gw.load()
    yield gw
    gw.close()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[Any]:
    """The gateway's Starlette app in-process (no BentoML): the fast level of HTTP tests."""
    from starlette.testclient import TestClient

    from service.http import build_app

    with TestClient(build_app(gateway), base_url="http://gateway") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def start_server(
    repository: Path,
    log: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    ledger: Path | None = None,
) -> Server:
    """`bentoml serve` on 127.0.0.1 and a free port, in its own process group; waits for /readyz."""
    from service.serve import server_command, server_env

    port = free_port()
    env = server_env(repository, workers, ADMIN_TOKEN, ledger or log.with_name("ledger.sqlite"))
    env.update(extra_env or {})
    with log.open("wb") as fh:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            server_command("127.0.0.1", port),
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return Server(url=url, port=port, process=proc, log=log)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(Server(url=url, port=port, process=proc, log=log))
    raise RuntimeError(f"bentoml serve not ready in 90 s: {log.read_text()[-2000:]}")


def stop_server(server: Server) -> None:
    """SIGTERM the process group we started (graceful), SIGKILL it if it lingers."""
    proc = server.process
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(built_repo: BuiltRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(built_repo.root, tmp_path_factory.mktemp("server") / "bentoml.log")
    yield srv
    stop_server(srv)
