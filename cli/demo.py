"""`gateway demo`: build (if needed), serve, replay held-out traffic with a drift phase, compare.

Everything it starts (the gateway, Prometheus when installed) runs in its own process group and is
stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from rich.console import Console

from cli.compare import make_console
from cli.procs import Managed, free_port
from cli.replay.traffic import Plan, Schema

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DRIFT = {
    # Tumours measured larger and noisier than in training: the trees' thresholds and the linear
    # model's scaling react differently, so the online ranking can move.
    "breast_cancer": "scale:worst area:1.35,scale:worst radius:1.15,scale:worst perimeter:1.15,noise:mean texture:0.6",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gateway demo`."""
    parser.add_argument("--dataset", default="breast_cancer", help="bundled dataset (default breast_cancer)")
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="repository root (default models/)")
    parser.add_argument("--rows", type=int, default=3000, help="rows of live traffic (default 3000)")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--label-delay", type=float, default=1.0)
    parser.add_argument("--label-fraction", type=float, default=0.9)
    parser.add_argument("--drift", help="drift spec for the second half (see `gateway replay --help`)")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    parser.add_argument("--no-prometheus", action="store_true")
    parser.add_argument("--keep-running", action="store_true", help="keep the servers up until Ctrl-C")
    parser.add_argument(
        "--rebuild", action="store_true", help="build a new repository version even if one exists"
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """The main job; returns 0 when the comparison was printed."""
    console = make_console()
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    children: list[Managed] = []
    try:
        return _run(args, console, children, started)
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything the demo started", markup=False)
        return 130
    finally:
        for child in reversed(children):
            child.stop()


def servable_version(model_dir: Path) -> tuple[Path | None, str]:
    """The newest version under ``model_dir`` if it verifies (files, checksums, manifest format),
    else (None, why); (None, "") when there is no repository yet."""
    from contract.verify import RepositoryError, resolve_version, verify_with_cards

    try:
        version = resolve_version(model_dir)
    except RepositoryError:
        return None, ""
    try:
        verify_with_cards(version)
    except RepositoryError as exc:
        return None, str(exc)
    return version, ""


def _run(args: argparse.Namespace, console: Console, children: list[Managed], started: float) -> int:
    from cli.replay.client import run as replay
    from cli.replay.command import print_end
    from cli.replay.traffic import ReplayError, fetch_schema

    step = _stepper(console, started)
    version = _repository(args, console, step)
    if version is None:
        return 2
    run_dir = ROOT / ".gateway" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    url = _start_gateway(version, run_dir, args.port or free_port(), children, step)
    prom_url = None if args.no_prometheus else _start_prometheus(url, run_dir, children, console, step)
    try:
        schema = fetch_schema(url)
        plan, drift_spec, held_out = _traffic(args, schema)
    except ReplayError as exc:
        print(f"gateway demo: error: {exc}", file=sys.stderr)
        return 2
    step(
        f"replaying {len(plan.records)} live requests at {args.rps:g}/s from {held_out} held-out rows; "
        f"labels arrive after {args.label_delay:g}s for {args.label_fraction:.0%} of rows; "
        f"drift in the second half: {drift_spec or 'none'}"
    )
    stats = asyncio.run(
        replay(
            url,
            plan,
            schema,
            rps=args.rps,
            duration=None,
            label_delay=args.label_delay,
            label_fraction=args.label_fraction,
            oip=False,
            seed=1,
            progress=lambda s: console.print("  " + s.line(), markup=False),
        )
    )
    step("offline vs online")
    print_end(console, stats, url)
    _where_to_look(console, url, prom_url, version)
    step("done" + (": servers keep running until Ctrl-C" if args.keep_running else ""))
    if args.keep_running:
        while all(c.process.poll() is None for c in children):
            time.sleep(1)
    return 0 if stats.answered else 1


def _repository(args: argparse.Namespace, console: Console, step: Callable[[str], None]) -> Path | None:
    """The version to serve: the newest one if it can be served, else a new build (None: bad input)."""
    from builders.build import BuildOptions, run_build
    from builders.errors import BuildError

    model_dir = args.out / args.dataset
    if not args.rebuild:
        version, problem = servable_version(model_dir)
        if version is not None:
            step(f"using the repository {version}")
            return version
        if problem:
            step(f"the existing repository cannot be served ({problem}): building a new version")
    step(f"building the default repository on {args.dataset} (equal budget for every family)")
    try:
        result = run_build(
            BuildOptions(dataset=args.dataset, out=args.out),
            progress=lambda m: console.print("  " + m, markup=False),
        )
    except BuildError as exc:
        print(f"gateway demo: error: {exc}", file=sys.stderr)
        return None
    step(f"wrote {result.path} (report: {result.path / 'report.html'})")
    return result.path


def _start_gateway(
    version: Path, run_dir: Path, port: int, children: list[Managed], step: Callable[[str], None]
) -> str:
    from cli.serve import server_command, server_env

    url = f"http://127.0.0.1:{port}"
    env = server_env(version, 1, ledger=run_dir / "ledger.sqlite")
    step(f"starting the gateway on {url} (bentoml serve, ledger {run_dir / 'ledger.sqlite'})")
    gateway = Managed(
        "gateway", server_command("127.0.0.1", port), run_dir / "gateway.log", env=env, cwd=ROOT
    )
    children.append(gateway)
    gateway.wait_http(f"{url}/readyz", 120)
    return url


def _start_prometheus(
    url: str, run_dir: Path, children: list[Managed], console: Console, step: Callable[[str], None]
) -> str | None:
    """A Prometheus scraping the gateway every 2 s with the alert rules, when one is installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        step("Prometheus is not installed (apt-get install prometheus): skipping it")
        return None
    prom_port = free_port()
    config = run_dir / "prometheus.yml"
    rules = ROOT / "monitoring" / "alerts.yml"
    config.write_text(
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
        + (f"rule_files:\n  - {rules}\n" if rules.is_file() else "")
        + "scrape_configs:\n  - job_name: ensemble-gateway\n    static_configs:\n"
        f"      - targets: ['{url.removeprefix('http://')}']\n"
    )
    prom = Managed(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        run_dir / "prometheus.log",
    )
    children.append(prom)
    prom_url = f"http://127.0.0.1:{prom_port}"
    try:
        prom.wait_http(f"{prom_url}/-/ready", 30)
    except RuntimeError as exc:
        console.print(f"Prometheus did not start, continuing without it: {exc}", markup=False)
        return None
    step(f"Prometheus on {prom_url} scraping the gateway every 2 s")
    return prom_url


def _traffic(args: argparse.Namespace, schema: Schema) -> tuple[Plan, str | None, int]:
    """Live traffic: the held-out test rows (never seen in training), resampled with a little jitter,
    then a drift phase. Returns (plan, drift spec, held-out rows)."""
    from builders import data as data_mod
    from builders.build import split_table
    from cli.replay.command import make_plan

    frame, target = data_mod.load_bundled(args.dataset)
    table = data_mod.prepare(frame, target, "auto", args.dataset, "demo", "0" * 64)
    _, _, x_test, _, _, _ = split_table(table, seed=0)
    held_out = frame.iloc[x_test.index].reset_index(drop=True)
    drift_spec = args.drift if args.drift is not None else DEFAULT_DRIFT.get(args.dataset)
    plan = make_plan(
        held_out,
        schema,
        target,
        rows=args.rows,
        routing_key=None,
        drift_spec=drift_spec,
        drift_after=0.5,
        jitter=0.1,
        seed=1,
    )
    return plan, drift_spec, len(held_out)


def _where_to_look(console: Console, url: str, prom_url: str | None, version: Path) -> None:
    lines = [
        "",
        "Where to look:",
        f"  {url}/compare   offline vs online, intervals, paired tests (JSON)",
        f"  {url}/metrics   Prometheus metrics (monitoring/ has alerts and a Grafana dashboard)",
        f"  {url}/models    members, ensembles, cards, routing",
    ]
    if prom_url:
        lines.append(f"  {prom_url}/graph   Prometheus UI, e.g. rate(gateway_feedback_total[1m])")
    lines.append(f"  {version / 'report.html'}   the offline report")
    for line in lines:
        console.print(line, markup=False)


def _stepper(console: Console, started: float) -> Callable[[str], None]:
    def step(message: str) -> None:
        console.print(f"[{time.monotonic() - started:6.1f}s] {message}", markup=False)

    return step
