"""Measuring one scenario: the load generators (hey, or loadgen.py), a slot (warm-up, measured window,
RSS and CPU accounting, gateway counters around it) and the py-spy profile of a gateway worker."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import tools
from benchmarks.peers import ADMIN_TOKEN, BENCH, ROOT, WORK, log
from benchmarks.servers import (
    RssSampler,
    Server,
    busy_cpu_seconds,
    children_cpu_seconds,
    ours_cpu_seconds,
    run_bounded,
)

CONNECTIONS = 8
SETTLE_S = 1.5
"""Pause after each slot: background work of the previous server (shadow queue, ledger flush every
0.5 s) finishes before the next server is measured."""
QUIET_PCT = 30.0
"""A slot waits (up to --quiet-wait s) until other users' processes use less than this % of a core."""


def choose_loadgen(requested: str) -> str:
    """ "hey" when installed (Debian's package, installed here as root when missing), else "python"
    (benchmarks/loadgen.py)."""
    missing = requested in ("hey", "auto") and shutil.which("hey") is None
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log("hey not found: trying `apt-get install -y hey` (Debian's package)")
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["apt-get", "install", "-y", "hey"], capture_output=True, timeout=300, check=False)
    if shutil.which("hey"):
        return "hey"
    if requested == "hey":
        raise SystemExit("run.py: --loadgen hey: hey is not installed (apt-get install -y hey)")
    return "python"


def measure(
    loadgen: str, port: int, path: str, body_file: Path, warmup_s: float, duration_s: float
) -> tuple[list[float], float, int]:
    """(latencies s, measured window s, errors) of one closed-loop run after a warm-up."""
    url = f"http://127.0.0.1:{port}{path}"
    if loadgen == "hey":
        base = ["hey", "-c", str(CONNECTIONS), "-m", "POST", "-T", "application/json", "-D", str(body_file)]
        if warmup_s > 0:
            run_bounded([*base, "-z", f"{warmup_s}s", url], warmup_s + 60)
        done = run_bounded([*base, "-z", f"{duration_s}s", "-o", "csv", url], duration_s + 90)
        if done.returncode != 0:
            raise RuntimeError(f"hey failed ({done.returncode}): {done.stderr[-2000:]}")
        return tools.hey_window(tools.parse_hey_csv(done.stdout))
    cmd = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--port",
        str(port),
        "--path",
        path,
        "--body",
        str(body_file),
        "--connections",
        str(CONNECTIONS),
        "--warmup",
        str(warmup_s),
        "--duration",
        str(duration_s),
    ]
    done = run_bounded(cmd, warmup_s + duration_s + 90)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen.py failed ({done.returncode}): {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return out["latencies_s"], out["window_s"], out["errors"]


@dataclass
class Scenario:
    """One measured configuration: which server, which request, and what to do before each slot."""

    key: str
    label: str
    server: str
    path: str
    body: bytes
    rows: int = 1
    before: Callable[[], None] | None = None
    gateway: bool = False
    rounds: list[dict[str, Any]] = field(default_factory=list)
    rss_peak: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def body_file(self) -> Path:
        path = WORK / "bodies" / f"{self.key}.json"
        # Rewritten when it differs: a body left by an earlier run (another repository or format)
        # would otherwise be sent instead of this one.
        if not path.exists() or path.read_bytes() != self.body:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.body)
        return path


def scrape(server: Server) -> dict[str, float]:
    """The gateway's counters from its /metrics (empty if it does not answer)."""
    try:
        return tools.gateway_counters(httpx.get(server.url + "/metrics", timeout=10).text)
    except httpx.HTTPError:
        return {}


def put_routing(server: Server, champion: str, shadow: list[str]) -> Callable[[], None]:
    """A hook setting the gateway's routing through the admin API (shadow fraction 1)."""

    def hook() -> None:
        r = httpx.put(
            server.url + "/admin/routing",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"champion": champion, "challengers": {}, "shadow": shadow, "shadow_fraction": 1.0},
            timeout=10,
        )
        if r.status_code != 200:
            raise RuntimeError(f"PUT /admin/routing: {r.status_code} {r.text}")

    return hook


def check_response(sc: Scenario, server: Server) -> dict[str, Any]:
    """One request before measuring: a scenario that does not answer 200 is not benchmarked."""
    if sc.before:
        sc.before()
    r = httpx.post(
        server.url + sc.path, content=sc.body, headers={"content-type": "application/json"}, timeout=30
    )
    if r.status_code != 200:
        raise RuntimeError(f"{sc.key}: {server.name} answered {r.status_code}: {r.text[:500]}")
    return dict(r.json())


def wait_quiet(max_wait_s: float, threshold_pct: float = QUIET_PCT) -> float:
    """Wait (up to ``max_wait_s``) until processes that are not ours use less than ``threshold_pct`` of
    a core over one second; returns the last such reading. Other users' jobs on a 2-core machine move
    every number, so slots start when the machine is quiet, or say that it was not."""
    deadline = time.monotonic() + max_wait_s
    while True:
        t0, busy0, ours0 = time.monotonic(), busy_cpu_seconds(), ours_cpu_seconds()
        time.sleep(1.0)
        elapsed = time.monotonic() - t0
        other = 100 * max(busy_cpu_seconds() - busy0 - (ours_cpu_seconds() - ours0), 0.0) / elapsed
        if other < threshold_pct or time.monotonic() >= deadline:
            return round(other, 1)
        time.sleep(1.0)


def run_slot(
    sc: Scenario, server: Server, loadgen: str, warmup: float, duration: float, quiet_wait: float = 0.0
) -> dict[str, Any]:
    """Warm up, measure, account RSS and CPU, read the gateway's counters; one line of output."""
    if sc.before:
        sc.before()
    other_before = wait_quiet(quiet_wait) if quiet_wait > 0 else None
    before = scrape(server) if sc.gateway else {}
    with RssSampler(server) as rss:
        if warmup > 0:  # warm up outside the CPU accounting window
            measure(loadgen, server.port, sc.path, sc.body_file, 0, warmup)
        t0, busy0, ours0 = time.monotonic(), busy_cpu_seconds(), ours_cpu_seconds()
        srv0, gen0 = server.cpu_seconds(), children_cpu_seconds()
        lat, window, errors = measure(loadgen, server.port, sc.path, sc.body_file, 0, duration)
        elapsed = time.monotonic() - t0
        busy = busy_cpu_seconds() - busy0
        ours = ours_cpu_seconds() - ours0
        srv = server.cpu_seconds() - srv0
        gen = children_cpu_seconds() - gen0
    cpu = {
        # % of one core over the measured window (the machine has os.cpu_count() cores)
        "server_cpu_pct": round(100 * srv / elapsed, 1),
        "loadgen_cpu_pct": round(100 * gen / elapsed, 1),
        "other_cpu_pct": round(100 * max(busy - ours - gen, 0.0) / elapsed, 1),
    }
    if other_before is not None:
        cpu["other_cpu_before_pct"] = other_before
    time.sleep(SETTLE_S)
    if sc.gateway:
        delta = tools.counter_delta(before, scrape(server))
        for k, v in delta.items():
            sc.counters[k] = sc.counters.get(k, 0.0) + v
    sc.rss_peak = max(sc.rss_peak, rss.peak)
    result = {"latencies_s": lat, "window_s": window, "errors": errors, "rss_mb": rss.peak, **cpu}
    s = tools.summarize(lat, window, CONNECTIONS, sc.rows, errors)
    lt = s["little"]
    log(
        f"  {sc.key:18s} {s['rps']:8.1f} req/s  p50 {s['p50_ms']:7.3f}  p99 {s['p99_ms']:7.3f}  "
        f"max {s['max_ms']:8.3f} ms  RSS {rss.peak:6.0f} MB  Little λW={lt['in_flight']:.2f}/{CONNECTIONS} "
        f"({lt['verdict'].split(':')[0]})  CPU% server {cpu['server_cpu_pct']:.0f} loadgen "
        f"{cpu['loadgen_cpu_pct']:.0f} other {cpu['other_cpu_pct']:.0f}"
        + (f"  ERRORS {errors}" if errors else "")
    )
    return result


def profile_gateway(
    server: Server, sc: Scenario, loadgen: str, seconds: float, name: str, flamegraph: bool
) -> dict[str, Any]:
    """py-spy on the gateway worker while the load generator runs ``sc``: CPU samples by thread, GIL
    samples (who holds it), and optionally an SVG flame graph; files in benchmarks/.work/."""
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        log("py-spy missing: installing it into the project venv (not a project dependency)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False, timeout=600)
    if not pyspy.exists():
        return {"note": "py-spy could not be installed: no profile"}
    pid = server.worker_pid("_bentoml_impl.worker")
    raw, gil, svg = (WORK / f"profile-{name}{suffix}" for suffix in (".txt", "-gil.txt", ".svg"))
    passes = 3 if flamegraph else 2
    load_s = passes * (seconds + 1) + 6
    errors: list[BaseException] = []

    def load() -> None:
        try:
            measure(loadgen, server.port, sc.path, sc.body_file, 0, load_s)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    time.sleep(2)
    rate = 250
    base = [str(pyspy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(rate), "--threads"]
    r1 = run_bounded([*base, "-f", "raw", "-o", str(raw)], seconds + 60)
    r2 = run_bounded([*base, "--gil", "-f", "raw", "-o", str(gil)], seconds + 60)
    r3 = run_bounded([*base, "-f", "flamegraph", "-o", str(svg)], seconds + 60) if flamegraph else None
    t.join(timeout=load_s + 120)
    if r1.returncode != 0 or not raw.exists():
        return {"note": f"py-spy failed: {r1.stderr[-1000:]}"}
    summary = tools.collapse_profile(raw.read_text().splitlines(), top=20)
    if r2.returncode == 0 and gil.exists():
        g = tools.collapse_profile(gil.read_text().splitlines(), top=10, idle=frozenset())
        summary["gil_threads"] = g["threads"]
        summary["gil_held_pct"] = round(100 * g["samples"] / (seconds * rate), 1)
    files = [raw, gil] + ([svg] if r3 is not None and r3.returncode == 0 and svg.exists() else [])
    return {
        **summary,
        "scenario": sc.label,
        "pid": pid,
        "seconds": seconds,
        "files": [str(f.relative_to(ROOT)) for f in files],
        "note": (
            f"py-spy, {seconds:.0f} s at {rate} Hz, on the BentoML worker (pid {pid}) while the load generator "
            f"kept 8 connections busy: {summary['samples']:,} samples, {summary['busy_samples']:,} busy (a "
            "thread waiting on a queue or lock is left out; py-spy leaves out threads idle in epoll); "
            "percentages are of busy samples. A second pass with `--gil` samples only the thread holding "
            "the GIL. Files (not committed): "
            + ", ".join(f"`{f.relative_to(ROOT)}`" for f in files)
            + "."
            + (f" Load generator error: {errors[0]}" if errors else "")
        ),
    }


def cross_check(
    scenarios: list[Scenario], servers: dict[str, Server], primary: str, warmup: float, duration: float
) -> list[dict[str, Any]]:
    """The other load generator on the same scenarios: rows for the report (the primary's pooled
    rounds next to one run of the other)."""
    other = "python" if primary == "hey" else ("hey" if shutil.which("hey") else None)
    rows: list[dict[str, Any]] = []
    if other is None:
        return rows
    log(f"load generator cross-check: {other} vs {primary} on {', '.join(sc.key for sc in scenarios)}")
    for sc in scenarios:
        server = servers[sc.server]
        lat, window, errors = measure(other, server.port, sc.path, sc.body_file, warmup, duration)
        time.sleep(SETTLE_S)
        mine = tools.summarize(lat, window, CONNECTIONS, sc.rows, errors)
        pooled = tools.pool_rounds(sc.rounds, CONNECTIONS, sc.rows)
        rows.append({"server": sc.label, "key": sc.key, "loadgen": f"{primary} (rounds)", **pooled})
        rows.append({"server": sc.label, "key": sc.key, "loadgen": other, **mine})
        log(
            f"  {sc.key}: {other} {mine['rps']} req/s p50 {mine['p50_ms']} ms; {primary} {pooled['rps']} req/s"
        )
    return rows
