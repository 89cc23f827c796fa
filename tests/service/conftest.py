"""Service fixtures: one small real repository (mixed numeric/categorical table with missing values,
built once per session), an in-process gateway, and a real `bentoml serve` process."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cli.procs import Managed, free_port
from service import metrics
from service.core.gateway import Gateway
from service.ledger.store import decode_outputs
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


@dataclass(frozen=True)
class HeldOut:
    """The builders' test split of the fixture table: the rows every card's test metrics come from."""

    records: list[dict[str, Any]]
    classes: np.ndarray
    """True class index of each record."""


@pytest.fixture(scope="session")
def held_out(built_repo: BuiltRepo) -> HeldOut:
    from builders import data as data_mod
    from builders.build import split_table

    frame = pd.read_csv(built_repo.csv)
    table = data_mod.prepare(frame, "target", "auto", "churn", str(built_repo.csv), "0" * 64)
    _, _, x_test, _, _, y_test = split_table(table, seed=0)
    records = to_records(x_test.rename(columns={c.tensor: c.name for c in table.columns}))
    return HeldOut(records, np.asarray(y_test))


def sample(name: str, **labels: str) -> float:
    """A metric's value in this process (hot-path updates are queued: flush them first, as /metrics
    does)."""
    metrics.flush()
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def ledger_rows(path: Path) -> dict[tuple[str, int], dict[str, tuple[int | None, float, str]]]:
    """(request id, row) -> variant -> (class index, score, role), as recorded."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT request_id, row_index, outputs FROM predictions").fetchall()
    finally:
        conn.close()
    return {(rid, i): decode_outputs(doc) for rid, i, doc in rows}


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

    from service.http.app import build_app

    with TestClient(build_app(gateway), base_url="http://gateway") as c:
        yield c


@dataclass
class Server:
    url: str
    port: int
    managed: Managed

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.managed.process

    @property
    def log(self) -> Path:
        return self.managed.log


def start_server(
    repository: Path,
    log: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    ledger: Path | None = None,
) -> Server:
    """`bentoml serve` on 127.0.0.1 and a free port, in its own process group; waits for /readyz."""
    from cli.serve import server_command, server_env

    port = free_port()
    env = server_env(repository, workers, ADMIN_TOKEN, ledger or log.with_name("ledger.sqlite"))
    env.update(extra_env or {})
    managed = Managed("bentoml serve", server_command("127.0.0.1", port), log, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    managed.wait_http(f"{url}/readyz", 90)
    return Server(url=url, port=port, managed=managed)


def stop_server(server: Server) -> None:
    """SIGTERM (graceful), then SIGKILL by PID anything of ours still alive, workers included."""
    server.managed.stop()


@pytest.fixture(scope="module")
def server(built_repo: BuiltRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(built_repo.root, tmp_path_factory.mktemp("server") / "bentoml.log")
    yield srv
    stop_server(srv)


def _our_servers(basetemp: Path) -> set[int]:
    """Server processes (arbiters and workers) started by this test session: their ledger lives
    under the session's temporary directory (other sessions' servers on the machine are not ours)."""
    import psutil

    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "_bentoml_impl.worker" not in cmd and "bentoml serve" not in cmd and "bin/bentoml" not in cmd:
            continue
        try:
            ledger = p.environ().get("GATEWAY_LEDGER_PATH", "")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if ledger.startswith(str(basetemp)):
            found.add(p.info["pid"])
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leaked_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every server a test starts must be gone at the end, workers included."""
    import time

    basetemp = tmp_path_factory.getbasetemp()
    yield
    deadline = time.monotonic() + 15
    leaked = _our_servers(basetemp)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.5)
        leaked = _our_servers(basetemp)
    assert not leaked, f"server processes left running: {sorted(leaked)}"
