"""The servers under test: the floor, the gateway and MLServer (its own virtualenv), and the repository
they all serve. Every server starts on 127.0.0.1 and a free port, in its own process group
(benchmarks/servers.py stops them by PID)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.envs import ensure_venv
from benchmarks.servers import Server, free_port

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
WORK = BENCH / ".work"
MLSERVER_ENV = BENCH / ".envs" / "mlserver"
MLSERVER_PINS = [
    "mlserver==1.7.*",
    "mlserver-sklearn==1.7.*",
    # MLServer 1.7.1 crashes with uvloop 0.23.
    "uvloop==0.21.*",
    # The joblib file is a scikit-learn 1.9.1 pipeline: the loader must be the same version.
    "scikit-learn==1.9.1",
    "onnxruntime==1.32.*",
    # uvicorn picks httptools when present: give the peer its fastest HTTP parser, as the gateway has.
    "httptools>=0.6",
]
ADMIN_TOKEN = "bench-admin-token"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Repo:
    """The repository version under test, its champion and its best member."""

    version_dir: Path
    manifest: Any
    champion: str
    best_member: str
    champion_members: list[str]
    champion_strategy: str
    champion_weights: list[float] | None
    champion_meta: Path | None


def prepare_repository(args: argparse.Namespace) -> Repo:
    """The newest version under --repository (built when missing or with --rebuild)."""
    from contract.verify import RepositoryError, load_card, resolve_version, verify

    root: Path = args.repository
    if args.rebuild and root.resolve() == (WORK / "models").resolve() and root.exists():
        shutil.rmtree(root)
    try:
        version_dir = resolve_version(root)
    except (RepositoryError, OSError):
        log(f"building a repository into {root} (gateway build --dataset breast_cancer, ~1 min)")
        gateway = Path(sys.executable).with_name("gateway")
        with (WORK / "build.log").open("w") as fh:
            subprocess.run(
                [str(gateway), "build", "--dataset", "breast_cancer", "--out", str(root)],
                cwd=ROOT,
                check=True,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        version_dir = resolve_version(root)
    manifest = verify(version_dir)

    def rank(i_member: tuple[int, Any]) -> tuple[float, float, int]:
        i, member = i_member
        test = load_card(version_dir / member.card).metrics.get("test", {})
        return (-test.get("accuracy", -math.inf), test.get("log_loss", math.inf), i)

    best = min(enumerate(manifest.members), key=rank)[1].name
    champion = manifest.routing.champion
    ens = {e.name: e for e in manifest.ensembles}
    strategy: str
    if champion in ens:
        e = ens[champion]
        members, strategy, weights = list(e.members), e.strategy, e.weights
        meta = version_dir / e.meta_model if e.meta_model else None
    else:
        members, strategy, weights, meta = [champion], "single", None, None
    return Repo(version_dir, manifest, champion, best, members, strategy, weights, meta)


def start_gateway(
    name: str, repo: Repo, workers: int, env_extra: dict[str, str], checkout: Path | None = None
) -> Server:
    """`bentoml serve` of the gateway as the project starts it (cli.serve), ledger on, admin token
    set, a fresh SQLite ledger of its own. ``checkout``: another working tree of the project (an older
    commit, for before/after runs) served with this environment's packages."""
    from cli.serve import SERVICE, server_command, server_env

    port = free_port()
    ledger = WORK / "ledgers" / f"{name}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(ledger) + suffix).unlink(missing_ok=True)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    env = server_env(repo.version_dir, workers, ADMIN_TOKEN, ledger)
    env["GATEWAY_LEDGER_ENABLED"] = "true"
    # `bentoml serve` keeps Prometheus multiprocess files in $BENTOML_HOME/prometheus_multiproc_dir and
    # wipes that folder when it starts: gateways sharing a home read (and delete) each other's metrics.
    env["BENTOML_HOME"] = str(WORK / "bentoml_home" / name)
    env.update(env_extra)
    cmd = server_command("127.0.0.1", port)
    cwd = ROOT
    if checkout is not None:
        # bentoml serve imports the service from its working directory, ahead of the editable install.
        cwd = checkout
        env["PYTHONPATH"] = str(checkout)
        if not (checkout / "service" / "bento.py").exists():
            cmd[cmd.index(SERVICE)] = "service.service:EnsembleGateway"  # the layout before cli/
    return Server(
        name,
        cmd,
        WORK / "logs" / f"{name}.log",
        port,
        "/readyz",
        env=env,
        cwd=cwd,
    )


def start_floor(name: str, config: dict[str, Any]) -> Server:
    """floor_app.py (uvicorn, uvloop, httptools, no access log) on the given config."""
    cfg = WORK / "peers" / f"{name}.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps(config, indent=1))
    port = free_port()
    return Server(
        name,
        [sys.executable, str(BENCH / "floor_app.py"), "--config", str(cfg), "--port", str(port)],
        WORK / "logs" / f"{name}.log",
        port,
        "/healthz",
        cwd=ROOT,
    )


def floor_config(
    repo: Repo, members: list[str], strategy: str, weights: list[float] | None
) -> dict[str, Any]:
    """floor_app.py's config: the manifest's columns and classes, the graphs and how to combine them."""
    m = repo.manifest
    paths = {s.name: repo.version_dir / s.path for s in m.members}
    cfg: dict[str, Any] = {
        "columns": [{"name": c.name, "tensor": c.tensor, "kind": c.kind} for c in m.inputs],
        "classes": m.classes,
        "models": [
            {"path": str(paths[n]), "weight": (weights[i] if weights else 1.0)} for i, n in enumerate(members)
        ],
        "strategy": strategy,
    }
    if strategy == "stack" and repo.champion_meta is not None:
        cfg["meta"] = str(repo.champion_meta)
    return cfg


def oip_body(repo: Repo, records: list[dict[str, Any]], sklearn: bool) -> bytes:
    """Open Inference Protocol v2 with the inputs each peer's model takes: one FP32 input per column
    for the scikit-learn pipeline (a one-row DataFrame), the ONNX graph's one [1, k] "numeric" input
    for onnxruntime (the benchmark table has numeric columns only)."""
    from contract.manifest import NUMERIC_INPUT

    rec = records[0]
    columns = repo.manifest.inputs
    if any(c.kind != "numeric" for c in columns):
        raise SystemExit("the MLServer peers' requests support numeric columns only")
    if not sklearn:
        row = [rec[c.name] for c in columns]
        one = {"name": NUMERIC_INPUT, "shape": [1, len(row)], "datatype": "FP32", "data": row}
        return json.dumps({"inputs": [one]}).encode()
    inputs = [{"name": c.tensor, "shape": [1], "datatype": "FP32", "data": [rec[c.name]]} for c in columns]
    body: dict[str, Any] = {"inputs": inputs}
    if sklearn:
        # Decoded into a one-row DataFrame with the pipeline's column names; probabilities, as the
        # gateway and the floor answer.
        body["parameters"] = {"content_type": "pd"}
        body["outputs"] = [{"name": "predict_proba"}]
    return json.dumps(body).encode()


def ensure_mlserver_env() -> Path:
    """MLServer's own virtualenv (created with MLSERVER_PINS when missing or broken); its python."""
    probe = "import mlserver, mlserver_sklearn, sklearn, onnxruntime; assert sklearn.__version__ == '1.9.1'"
    return ensure_venv(MLSERVER_ENV, MLSERVER_PINS, probe, WORK / "mlserver-pip.log", log)


def start_mlserver(
    python: Path, name: str, implementation: str, model_file: str, source: Path, parallel_workers: int
) -> Server:
    """MLServer serving one model named "best" from its own folder (settings.json on 127.0.0.1 and free
    ports for HTTP, gRPC and metrics; model-settings.json; the model file copied in)."""
    folder = WORK / "peers" / name
    if folder.exists():
        shutil.rmtree(folder)
    model_dir = folder / "best"
    model_dir.mkdir(parents=True)
    http_port = free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        # 0 runs inference in the server process; 1 (MLServer's default) hands every request to a
        # worker process, measured 2.5x slower here for these sub-millisecond models.
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    model_settings = {
        "name": "best",
        "implementation": implementation,
        "parameters": {"uri": f"./{model_file}", "version": "v1"},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=1))
    shutil.copyfile(source, model_dir / model_file)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BENCH / "mlserver_onnx")  # ort_model.OnnxRuntimeModel
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return Server(
        name,
        [str(python.with_name("mlserver")), "start", str(folder)],
        WORK / "logs" / f"{name}.log",
        http_port,
        "/v2/models/best/ready",
        env=env,
        cwd=folder,
    )


def start_all(
    repo: Repo, joblib_file: Path, mlserver_python: Path | None, curves: bool, mlserver_workers: int
) -> dict[str, Server]:
    """Every server of the run, started at once (they load in parallel), then waited for."""
    members = {s.name: repo.version_dir / s.path for s in repo.manifest.members}
    servers = {
        "floor": start_floor(
            "floor", floor_config(repo, repo.champion_members, repo.champion_strategy, repo.champion_weights)
        ),
        "floor_member": start_floor("floor_member", floor_config(repo, [repo.best_member], "single", None)),
        "gw_champion": start_gateway("gw_champion", repo, 1, {"GATEWAY_SHADOW_FRACTION": "0"}),
        "gw_full": start_gateway("gw_full", repo, 1, {"GATEWAY_SHADOW_FRACTION": "1.0"}),
        # its own server, so the batches' memory does not show in the single-row server's RSS
        "gw_batch": start_gateway("gw_batch", repo, 1, {"GATEWAY_SHADOW_FRACTION": "1.0"}),
    }
    if curves:
        servers["gw_curve"] = start_gateway("gw_curve", repo, 1, {})
        servers["gw_full_w2"] = start_gateway("gw_full_w2", repo, 2, {"GATEWAY_SHADOW_FRACTION": "1.0"})
    if mlserver_python is not None:
        servers["mlserver_sklearn"] = start_mlserver(
            mlserver_python,
            "mlserver_sklearn",
            "mlserver_sklearn.SKLearnModel",
            "model.joblib",
            joblib_file,
            mlserver_workers,
        )
        servers["mlserver_onnx"] = start_mlserver(
            mlserver_python,
            "mlserver_onnx",
            "ort_model.OnnxRuntimeModel",
            "model.onnx",
            members[repo.best_member],
            mlserver_workers,
        )
    log(f"starting {len(servers)} servers: {', '.join(servers)}")
    for server in servers.values():
        server.wait_ready(180)
    log("all servers ready")
    return servers
