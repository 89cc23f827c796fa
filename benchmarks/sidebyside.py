"""Gateway configurations side by side: the numbers behind BENCHMARKS.md's levers table.

    .venv/bin/python benchmarks/sidebyside.py --floor \\
        thread=GATEWAY_SHADOW_FRACTION=1+GATEWAY_EVALUATOR_PROCESS=false process=GATEWAY_SHADOW_FRACTION=1
    .venv/bin/python benchmarks/sidebyside.py --rows 64 --rounds 3 a=GATEWAY_SHADOW_GATHER_S=0.02 b=
    git worktree add --detach ../before <commit> && .venv/bin/python benchmarks/sidebyside.py \
        before@../before=GATEWAY_SHADOW_FRACTION=1 after=GATEWAY_SHADOW_FRACTION=1

Every configuration is a `bentoml serve` of the gateway (as benchmarks/run.py starts it, 1 worker,
ledger on) with the given GATEWAY_* variables; all start at once, then each round measures each in
turn (hey or loadgen.py, 8 connections, same body), interleaved, so drifts of a shared machine hit
all alike. Prints one Markdown row per configuration (medians over rounds; max of max) and its
throughput ratio to the first. Needs the repository and request records of a benchmarks/run.py run
(`--quick` is enough).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import tools  # noqa: E402
from benchmarks.measure import CONNECTIONS, Scenario, choose_loadgen, run_slot  # noqa: E402
from benchmarks.peers import WORK, floor_config, prepare_repository, start_floor, start_gateway  # noqa: E402
from benchmarks.servers import Server, stop_all  # noqa: E402


def parse_config(spec: str) -> tuple[str, dict[str, str], Path | None]:
    """`name[@CHECKOUT]=VAR=value+VAR2=value2` -> (name, {VAR: value, ...}, checkout); `name=` is the
    defaults; `@CHECKOUT` serves another working tree of the project (e.g. `git worktree add` of an
    older commit) for before/after runs."""
    name, sep, rest = spec.partition("=")
    name, _, checkout = name.partition("@")
    if not sep or not name:
        raise ValueError(f"configuration {spec!r}: expected name[@CHECKOUT]=VAR=value[+VAR=value...]")
    tree = Path(checkout) if checkout else None
    if tree is not None and not (tree / "service").is_dir():
        raise ValueError(f"configuration {spec!r}: {tree} is not a checkout of the project")
    env: dict[str, str] = {}
    for item in filter(None, rest.split("+")):
        var, sep, value = item.partition("=")
        if not sep or not var.startswith("GATEWAY_"):
            raise ValueError(f"configuration {spec!r}: {item!r} is not GATEWAY_VAR=value")
        env[var] = value
    return name, env, tree


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="name=GATEWAY_VAR=value[+GATEWAY_VAR=value...]")
    p.add_argument("--rows", type=int, default=1, help="records per request (default 1)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds measured per slot")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--floor", action="store_true", help="also measure the floor (Starlette + onnxruntime)")
    p.add_argument("--loadgen", choices=("auto", "hey", "python"), default="auto")
    args = p.parse_args(argv)
    try:
        configs = [parse_config(c) for c in args.configs]
    except ValueError as exc:
        p.error(str(exc))
    records_file = WORK / "records.json"
    if not records_file.exists():
        p.error(f"{records_file}: missing; run `benchmarks/run.py --quick` once first")
    records = json.loads(records_file.read_text())
    body = json.dumps({"records": (records * (args.rows // len(records) + 1))[: args.rows]}).encode()
    repo = prepare_repository(argparse.Namespace(repository=WORK / "models", rebuild=False))
    loadgen = choose_loadgen(args.loadgen)
    servers: dict[str, Server] = {}
    try:
        if args.floor:
            config = floor_config(repo, repo.champion_members, repo.champion_strategy, repo.champion_weights)
            servers["floor"] = start_floor("sbs_floor", config)
        for name, env, checkout in configs:
            servers[name] = start_gateway(f"sbs_{name}", repo, 1, env, checkout)
        for server in servers.values():
            server.wait_ready(180)
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                sc = Scenario(
                    f"{name}_r{args.rows}", name, name, "/predict", body, args.rows, gateway=name != "floor"
                )
                out = run_slot(sc, server, loadgen, 1.0, args.duration)
                summary = tools.summarize(
                    out["latencies_s"], out["window_s"], CONNECTIONS, args.rows, out["errors"]
                )
                results[name].append({**summary, "rss_mb": out["rss_mb"], "cpu": out["server_cpu_pct"]})
    finally:
        stop_all()
    print(
        f"\n{args.rounds} rounds x {args.duration:.0f} s, {args.rows} row(s) a request, {loadgen}, {CONNECTIONS} connections"
    )
    print("| config | req/s | vs first | p50 ms | p99 ms | max ms | RSS MB | server CPU % |")
    print("|---|---|---|---|---|---|---|---|")
    first = None
    for name, rounds in results.items():
        rps = statistics.median(r["rps"] for r in rounds)
        first = first or rps
        print(
            f"| {name} | {rps:,.0f} | {rps / first:.2f}x | {statistics.median(r['p50_ms'] for r in rounds):.1f} "
            f"| {statistics.median(r['p99_ms'] for r in rounds):.1f} | {max(r['max_ms'] for r in rounds):.1f} "
            f"| {max(r['rss_mb'] for r in rounds):.0f} | {statistics.median(r['cpu'] for r in rounds):.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
