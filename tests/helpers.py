"""Typed helpers shared by the test modules: a valid manifest, a mixed table, built repositories.

Nothing here is mocked: repositories are built by the real builders and read back from disk with
onnxruntime, as the service reads them.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

from cli.procs import Managed, free_port
from contract.feeds import make_feeds
from contract.manifest import CARD_FILE, DatasetFingerprint, Manifest, ModelCard
from contract.verify import verify
from service import metric_queue, metrics
from service.ledger.schema import decode_outputs

if TYPE_CHECKING:  # the service half of the suite must not need scikit-learn
    from builders.build import BuildOptions, BuildResult

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "test-admin-token"
PROVIDERS = ["CPUExecutionProvider"]
FINGERPRINT = {
    "source": "tests:tiny",
    "sha256": "0" * 64,
    "rows": 100,
    "columns": 3,
    "target": "label",
}


def sha(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def manifest_data() -> dict[str, Any]:
    """A valid binary-task manifest as plain data: three members, vote/weighted/stack, a champion."""
    members = [
        {
            "name": name,
            "family": name,
            "path": f"members/{name}/model.onnx",
            "card": f"members/{name}/card.json",
            "sha256": sha(name.encode()),
            "outputs": ["label", "probabilities"],
        }
        for name in ("logreg", "tree", "knn")
    ]
    return {
        "name": "tiny",
        "version": 1,
        "created_at": "2025-01-01T00:00:00Z",
        "task": "binary",
        "target": "label",
        "inputs": [
            {"name": "mean radius", "tensor": "mean_radius", "kind": "numeric"},
            {"name": "colour", "tensor": "colour", "kind": "categorical", "categories": ["blue", "red"]},
        ],
        "classes": ["no", "yes"],
        "primary_metric": "accuracy",
        "members": members,
        "ensembles": [
            {
                "name": "vote",
                "strategy": "hard_vote",
                "members": ["logreg", "tree", "knn"],
                "card": "ensembles/vote/card.json",
            },
            {
                "name": "weighted",
                "strategy": "soft_average",
                "members": ["logreg", "tree", "knn"],
                "weights": [0.5, 0.3, 0.2],
                "card": "ensembles/weighted/card.json",
            },
            {
                "name": "stack",
                "strategy": "stack",
                "members": ["logreg", "tree", "knn"],
                "meta_model": "ensembles/stack/meta.onnx",
                "meta_sha256": sha(b"stack"),
                "card": "ensembles/stack/card.json",
            },
        ],
        "routing": {"champion": "logreg", "shadow": ["tree", "knn", "vote", "weighted", "stack"]},
        "dataset": dict(FINGERPRINT),
    }


def stage_tiny_version(folder: Path) -> Callable[[int, dict[str, str]], Manifest]:
    """Write two fake members (model bytes + a real card) into ``folder``; returns a manifest maker
    for builders.repository.publish. The model files are not ONNX: only checksums are exercised."""
    names = ("alpha", "beta")
    shas: dict[str, str] = {}
    for name in names:
        member = folder / "members" / name
        member.mkdir(parents=True)
        payload = f"model bytes of {name}".encode()
        (member / "model.onnx").write_bytes(payload)
        shas[name] = sha(payload)
        card = ModelCard(
            name=name,
            kind="member",
            family=name,
            primary_metric="accuracy",
            sha256=shas[name],
            dataset=DatasetFingerprint(**FINGERPRINT),
        )
        (member / CARD_FILE).write_text(card.model_dump_json())

    def make_manifest(version: int, files: dict[str, str]) -> Manifest:
        data = manifest_data()
        data.update(
            name="tiny",
            version=version,
            members=[
                {
                    "name": n,
                    "family": n,
                    "path": f"members/{n}/model.onnx",
                    "card": f"members/{n}/{CARD_FILE}",
                    "sha256": shas[n],
                    "outputs": ["label", "probabilities"],
                }
                for n in names
            ],
            ensembles=[],
            routing={"champion": "alpha", "shadow": ["beta"]},
            files=files,
        )
        return Manifest.model_validate(data)

    return make_manifest


def tree_snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (directories map to None, files to their bytes)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def mixed_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Numeric and text columns with missing values, and three targets that depend on them.

    Columns: "mean radius" and "width (cm)" (float, some NaN), "colour" (text, some None; the last
    rows bring a colour never seen in the first 200), "size" (text); targets "label" (binary text),
    "grade" (three classes) and "amount" (continuous).
    """
    rng = np.random.default_rng(seed)
    radius = rng.normal(size=n)
    width = rng.uniform(0, 10, size=n)
    colour = rng.choice(np.array(["red", "green", "blue", None], dtype=object), size=n)
    size = rng.choice(["S", "M", "L"], size=n)
    score = radius + (colour == "red") * 1.0 - 0.2 * width + (size == "L") * 0.5 + rng.normal(0, 0.5, n)
    frame = pd.DataFrame(
        {
            "mean radius": radius,
            "width (cm)": width,
            "colour": colour,
            "size": size,
            "label": np.where(score > -1, "pos", "neg"),
            "grade": np.select([score < -1.5, score < -0.5], ["a", "b"], "c"),
            "amount": 3 * score + 1,
        }
    )
    frame.loc[::9, "mean radius"] = np.nan
    frame.loc[::11, "width (cm)"] = np.nan
    frame.loc[200::5, "colour"] = "purple"
    return frame


def session_for(path: Path) -> ort.InferenceSession:
    """An onnxruntime session on a file, CPU provider named explicitly."""
    return ort.InferenceSession(str(path), providers=PROVIDERS)


@dataclass(frozen=True)
class BundledBuild:
    """A repository built by builders.build.run_build, plus the raw test split it was scored on."""

    options: BuildOptions
    result: BuildResult
    version_dir: Path
    manifest: Manifest
    progress: list[str]
    test_rows: dict[str, list[Any]]
    """Raw test-split values keyed by column name, as a client would send them."""
    y_test: npt.NDArray[Any]
    """Test-split class indices (or targets), reproduced from the build's documented split."""

    def feeds(self) -> dict[str, npt.NDArray[Any]]:
        """onnxruntime feeds for the test rows, through the service's feed builder."""
        return make_feeds(self.manifest.inputs, self.test_rows)

    def member_outputs(self, names: Sequence[str]) -> list[list[npt.NDArray[Any]]]:
        """Each named member's outputs on the test rows, read from its ONNX file on disk."""
        specs = {m.name: m for m in self.manifest.members}
        feeds = self.feeds()
        return [session_for(self.version_dir / specs[n].path).run(specs[n].outputs, feeds) for n in names]


def build_bundled(opts: BuildOptions) -> BundledBuild:
    """Run a real build of a bundled dataset and reproduce its test split (80/20, seeded, stratified)."""
    from sklearn.model_selection import train_test_split

    from builders.build import run_build
    from builders.data import DEFAULT_TASKS, frame_digest, load_bundled, prepare

    assert opts.dataset is not None
    messages: list[str] = []
    result = run_build(opts, progress=messages.append)
    frame, target = load_bundled(opts.dataset)
    task = DEFAULT_TASKS.get(opts.dataset, opts.task) if opts.task == "auto" else opts.task
    table = prepare(frame, target, task, opts.dataset, f"sklearn:{opts.dataset}", frame_digest(frame))
    stratify = table.y if table.task != "regression" else None
    _, x_test, _, y_test = train_test_split(
        table.features, table.y, test_size=0.2, random_state=opts.seed, stratify=stratify
    )
    rows = {c.name: frame.loc[x_test.index, c.name].tolist() for c in result.manifest.inputs}
    return BundledBuild(
        options=opts,
        result=result,
        version_dir=result.path,
        manifest=verify(result.path),
        progress=messages,
        test_rows=rows,
        y_test=np.asarray(y_test),
    )


# --- the churn repository of the service tests --------------------------------------------------
def churn_frame(n: int = 420, seed: int = 0) -> pd.DataFrame:
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


@contextmanager
def in_process_gateway(
    repository: Path, ledger: Path, max_batch_rows: int = 128
) -> Iterator[tuple[Any, Any]]:
    """(Starlette test client, Gateway) serving ``repository`` in this process, recording to a SQLite
    ledger at ``ledger`` on threads of this process."""
    from starlette.testclient import TestClient

    from service.core.gateway import Gateway
    from service.http.app import build_app
    from service.settings import Settings

    gw = Gateway(
        Settings(
            repository=repository,
            admin_token=ADMIN_TOKEN,
            max_batch_rows=max_batch_rows,
            ledger_path=ledger,
            ledger_flush_interval_s=0.05,
            evaluator_process=False,
        )
    )
    gw.load()
    try:
        with TestClient(build_app(gw), base_url="http://gateway") as client:
            yield client, gw
    finally:
        gw.close()


def fortune_frame(per_topic: int = 60, seed: int = 0) -> pd.DataFrame:
    """A mixed text table from Debian's fortunes package: three topics' texts (some missing), their
    word count (numeric) and whether they carry an attribution (categorical)."""
    from builders.data import load_fortunes

    rng = np.random.default_rng(seed)
    frame = load_fortunes()
    frame = frame[frame["topic"].isin(["computers", "food", "law"])]
    frame = frame.groupby("topic").head(per_topic).reset_index(drop=True)
    words = frame["text"].str.split().str.len().astype(float)
    attributed = np.where(frame["text"].str.contains(" -- "), "yes", "no").astype(object)
    text = frame["text"].astype(object)
    text[rng.random(len(frame)) < 0.04] = None
    return pd.DataFrame({"text": text, "words": words, "attributed": attributed, "topic": frame["topic"]})


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready records (NaN -> None)."""
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()})
    return out


@dataclass(frozen=True)
class TextRepo:
    """The fortunes repository (tests/conftest.py): root, version, the CSV and the build's messages."""

    root: Path
    version: Path
    csv: Path
    progress: list[str]


@dataclass(frozen=True)
class BuiltRepo:
    """The churn repository (tests/conftest.py): its root, its one version, the table it was built from."""

    root: Path
    version: Path
    csv: Path


@dataclass(frozen=True)
class HeldOut:
    """The builders' test split of the fixture table: the rows every card's test metrics come from."""

    records: list[dict[str, Any]]
    classes: np.ndarray
    """True class index of each record."""


def sample(name: str, **labels: str) -> float:
    """A metric's value in this process (hot-path updates are queued: flush them first, as /metrics
    does)."""
    metric_queue.flush()
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def wait_until(check: Callable[[], object], timeout_s: float, what: str, step_s: float = 0.02) -> None:
    """Poll ``check`` until it is true; AssertionError naming ``what`` once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(step_s)


def ledger_count(path: Path, where: str = "1=1") -> int:
    """Prediction rows in a ledger file (optionally only those matching a WHERE clause)."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM predictions WHERE {where}").fetchone()[0])


def ledger_ids(path: Path) -> set[str]:
    """Distinct request ids in a ledger file."""
    with sqlite3.connect(path) as conn:
        return {r for (r,) in conn.execute("SELECT DISTINCT request_id FROM predictions")}


def remove_ledger(path: Path) -> None:
    """Delete a SQLite ledger with its WAL and shared-memory files (as an operator's rm would)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def scraped(text: str, sample: str) -> float:
    """One sample's value in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "table.csv") -> str:
    """A table written as CSV; returns its path as a string (for command lines)."""
    path = folder / name
    frame.to_csv(path, index=False)
    return str(path)


def ledger_rows(path: Path) -> dict[tuple[str, int], dict[str, tuple[int | None, float, str]]]:
    """(request id, row) -> variant -> (class index, score, role), as recorded."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT request_id, row_index, outputs FROM predictions").fetchall()
    finally:
        conn.close()
    return {(rid, i): decode_outputs(doc) for rid, i, doc in rows}


# --- real servers -----------------------------------------------------------------------------------
@dataclass
class Server:
    """A `bentoml serve` of the gateway that a test started (stop it with stop_server)."""

    url: str
    port: int
    managed: Managed
    env: dict[str, str]

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
    return Server(url=url, port=port, managed=managed, env=env)


def serve_refusal(repository: Path, *flags: str) -> str:
    """`gateway serve` with these flags must refuse to start: exit code 2 and one line on stderr, which
    is returned."""
    cmd = [sys.executable, "-m", "cli.main", "serve", "--repository", str(repository), *flags]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def stop_server(server: Server) -> None:
    """SIGTERM (graceful), then SIGKILL by PID anything of ours still alive, workers included."""
    server.managed.stop()


def our_servers(basetemp: Path) -> set[int]:
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
