"""Benchmark the gateway against its floor and its peers, interleaved, in one command.

    .venv/bin/python benchmarks/run.py                 # full run (~12-15 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick         # smoke run of every step (~4 min)
    .venv/bin/python benchmarks/run.py --duration 10 --rounds 3 --soak 30 --loadgen hey

What it does, in order (everything under benchmarks/.work/, servers on 127.0.0.1 only):

1. a repository: the newest version under --repository (default benchmarks/.work/models, built with
   `gateway build --dataset breast_cancer` when missing or with --rebuild); its champion, and its best
   member (highest test accuracy in the cards; ties: lower test log loss, then manifest order);
2. in-process single-row latency of every member, onnxruntime vs a scikit-learn refit (inproc.py),
   which also writes the best member's pipeline as joblib and 64 held-out records (request bodies);
3. MLServer's own virtualenv (benchmarks/.envs/mlserver: mlserver 1.7, mlserver-sklearn 1.7,
   uvloop 0.21, scikit-learn 1.9.1, onnxruntime) when missing;
4. every server at once, each in its own process group on a free port: the floor (floor_app.py) on
   the champion's graphs and on the best member, the gateway (champion alone; full ensemble; full
   ensemble for 64-row batches; a routing-curve server; full ensemble with 2 workers), MLServer +
   mlserver-sklearn and MLServer + an onnxruntime runtime (mlserver_onnx/) on the best member;
5. --rounds rounds; in each, every scenario in turn gets a warm-up and a --duration measurement with
   the same closed-loop load generator (hey when installed, else loadgen.py), 8 keep-alive
   connections; RSS of each server's process tree is sampled while it is loaded; gateway counters
   are read from /metrics around each slot (to prove the shadow work was done, not dropped);
6. a --soak run of the full ensemble (the p99/max targets), a cross-check of the load generators on
   the floor and the full ensemble, and py-spy profiles (CPU by thread, GIL holders, a flame graph)
   of the gateway worker under full-ensemble and champion-alone load;
7. every server stopped by PID (also on Ctrl-C or an error); ledger rows counted; results.json and the
   generated part of BENCHMARKS.md (between its markers) written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from benchmarks import render, tools  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    CONNECTIONS,
    Scenario,
    check_response,
    choose_loadgen,
    cross_check,
    profile_gateway,
    put_routing,
    run_slot,
)
from benchmarks.peers import (  # noqa: E402
    BENCH,
    WORK,
    Repo,
    ensure_mlserver_env,
    log,
    oip_body,
    prepare_repository,
    start_all,
)
from benchmarks.servers import Server, stop_all  # noqa: E402

BATCH_ROWS = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the gateway against a bare floor and MLServer, interleaved.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per slot (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each slot (default 3)")
    p.add_argument("--soak", type=float, default=30.0, help="seconds of the full-ensemble p99/max run (30)")
    p.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy sampling seconds (10)")
    p.add_argument("--quick", action="store_true", help="1 round of 3 s, 8 s soak, 4 s profile: a smoke run")
    p.add_argument("--loadgen", choices=["auto", "hey", "python"], default="auto")
    p.add_argument("--repository", type=Path, default=WORK / "models")
    p.add_argument("--rebuild", action="store_true", help="rebuild benchmarks/.work/models first")
    p.add_argument("--mlserver-workers", type=int, default=0, help="MLServer parallel_workers (default 0)")
    p.add_argument("--no-mlserver", action="store_true", help="skip both MLServer peers")
    p.add_argument("--no-curves", action="store_true", help="skip the members and workers curves")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each slot, wait up to this many seconds for other processes to go quiet (30)",
    )
    p.add_argument("--out", type=Path, default=BENCH, help="where results.json and BENCHMARKS.md go")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup, args.soak, args.profile_seconds = 3.0, 1, 1.0, 8.0, 4.0
        args.quiet_wait = min(args.quiet_wait, 5.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        report = run(args, started)
    except KeyboardInterrupt:
        log("interrupted: stopping every server we started")
        return 130
    finally:
        stop_all()
    log(
        f"done in {report['meta']['run_seconds']:.0f} s: {args.out / 'BENCHMARKS.md'}, {args.out / 'results.json'}"
    )
    return 0


def run_inproc(repo: Repo) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    """inproc.py in its own process, before any server starts: (results, records, joblib file)."""
    out, records, joblib_file = WORK / "inproc.json", WORK / "records.json", WORK / "peers" / "best.joblib"
    log("in-process single-row latency, onnxruntime vs scikit-learn refit (inproc.py)")
    cmd = [sys.executable, str(BENCH / "inproc.py"), "--repository", str(repo.version_dir)]
    cmd += [
        "--best",
        repo.best_member,
        "--joblib",
        str(joblib_file),
        "--records",
        str(records),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=900)
    return json.loads(out.read_text()), json.loads(records.read_text()), joblib_file


def build_scenarios(
    repo: Repo, servers: dict[str, Server], records: list[dict[str, Any]]
) -> tuple[list[Scenario], dict[str, list[dict[str, Any]]]]:
    """The interleaved scenarios (in round order) and the curves' points."""
    one = json.dumps({"records": records[:1]}).encode()
    batch = json.dumps({"records": (records * BATCH_ROWS)[:BATCH_ROWS]}).encode()
    m = repo.manifest
    champ = (
        f"`{repo.champion}` = {repo.champion_strategy} of {len(repo.champion_members)}"
        if repo.champion_strategy != "single"
        else f"`{repo.champion}`"
    )
    best = repo.best_member
    full = (
        f"{len(m.members)} members + {len(m.ensembles)} combiners every request; shadow 1.0, ledger, metrics"
    )
    scenarios = [
        Scenario(
            "floor", f"floor: Starlette + uvicorn, champion's graphs ({champ})", "floor", "/predict", one
        ),
        Scenario(
            "floor_member",
            f"floor: Starlette + uvicorn, best member `{best}`"
            + (" (the same as the floor here: a check of the noise)" if repo.champion == best else ""),
            "floor_member",
            "/predict",
            one,
        ),
        Scenario(
            "champion",
            f"gateway: champion alone ({champ}; shadow 0, ledger on)",
            "gw_champion",
            "/predict",
            one,
            gateway=True,
        ),
        Scenario("full", f"gateway: full ensemble ({full})", "gw_full", "/predict", one, gateway=True),
        Scenario(
            "batch64",
            f"gateway: full ensemble, {BATCH_ROWS}-row batches",
            "gw_batch",
            "/predict",
            batch,
            rows=BATCH_ROWS,
            gateway=True,
        ),
    ]
    if "mlserver_sklearn" in servers:
        infer = "/v2/models/best/infer"
        scenarios += [
            Scenario(
                "mlserver_sklearn",
                f"MLServer 1.7 + mlserver-sklearn, `{best}` pipeline (joblib)",
                "mlserver_sklearn",
                infer,
                oip_body(repo, records, sklearn=True),
            ),
            Scenario(
                "mlserver_onnx",
                f"MLServer 1.7 + onnxruntime runtime, `{best}` ONNX",
                "mlserver_onnx",
                infer,
                oip_body(repo, records, sklearn=False),
            ),
        ]
    curves: dict[str, list[dict[str, Any]]] = {"members": [], "workers": []}
    if "gw_curve" in servers:
        others = [s.name for s in m.members if s.name != best]
        for k in sorted({1, 3, 5, len(m.members)}):
            if k > len(m.members):
                continue
            shadow = others[: k - 1]
            key = f"members_{k}"
            hook = put_routing(servers["gw_curve"], best, shadow)
            label = f"gateway: {k} member(s): `{best}` answers, {k - 1} shadow"
            scenarios.append(Scenario(key, label, "gw_curve", "/predict", one, before=hook, gateway=True))
            what = f"{best} served" + (f"; shadow: {', '.join(shadow)}" if shadow else "")
            curves["members"].append({"point": k, "scenario": key, "what": what})
        scenarios.append(
            Scenario(
                "full_w2", "gateway: full ensemble, 2 workers", "gw_full_w2", "/predict", one, gateway=True
            )
        )
        curves["workers"] = [
            {"point": 1, "scenario": "full", "what": "full ensemble, 1 worker"},
            {"point": 2, "scenario": "full_w2", "what": "full ensemble, 2 workers"},
        ]
    return scenarios, curves


def sanity(repo: Repo, scenarios: list[Scenario], servers: dict[str, Server]) -> list[str]:
    """Every scenario answers 200; the gateway's champion and the floor compute the same thing."""
    answers = {sc.key: check_response(sc, servers[sc.server]) for sc in scenarios}
    notes = []
    for key in ("champion", "full"):
        if answers[key].get("variant") != repo.champion:
            notes.append(f"{key}: answered by {answers[key].get('variant')!r}, expected the champion")
    fp = answers["floor"]["predictions"][0]["probabilities"]
    gp = answers["champion"]["predictions"][0]["probabilities"]
    diff = max(abs(fp[k] - gp[k]) for k in fp)
    notes.append(
        f"the floor and the gateway's champion give the same probabilities on the benchmark record "
        f"(max |ΔP| = {diff:.1e})" + ("" if diff < 1e-5 else ": they differ, check the floor")
    )
    return notes


def ledger_counts(names: list[str]) -> dict[str, int]:
    """Prediction rows in each gateway's ledger (after the graceful stop flushed it)."""
    rows = {}
    for name in names:
        db = WORK / "ledgers" / f"{name}.sqlite"
        if db.exists():
            with contextlib.closing(sqlite3.connect(db)) as conn:
                rows[name] = int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
    return rows


def run(args: argparse.Namespace, started: float) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    repo = prepare_repository(args)
    log(
        f"repository {repo.version_dir}: champion {repo.champion} ({repo.champion_strategy} of "
        f"{', '.join(repo.champion_members)}), best member {repo.best_member}"
    )
    loadgen = choose_loadgen(args.loadgen)
    log(f"load generator: {loadgen}")
    inproc, records, joblib_file = run_inproc(repo)
    mlserver_python = None if args.no_mlserver else ensure_mlserver_env()
    servers = start_all(repo, joblib_file, mlserver_python, not args.no_curves, args.mlserver_workers)
    scenarios, curves = build_scenarios(repo, servers, records)
    notes = sanity(repo, scenarios, servers)

    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds} ({len(scenarios)} scenarios x {args.warmup:g}+{args.duration:g} s)")
        for sc in scenarios:
            sc.rounds.append(
                run_slot(sc, servers[sc.server], loadgen, args.warmup, args.duration, args.quiet_wait)
            )
    by_key = {sc.key: sc for sc in scenarios}
    one = by_key["full"].body
    soak = Scenario(
        "soak", f"gateway: full ensemble, one {args.soak:g} s run", "gw_full", "/predict", one, gateway=True
    )
    log(f"soak: full ensemble for {args.soak:g} s")
    soak.rounds.append(run_slot(soak, servers["gw_full"], loadgen, args.warmup, args.soak, args.quiet_wait))
    checks = cross_check([by_key["floor"], by_key["full"]], servers, loadgen, args.warmup, args.duration)
    profiles: list[dict[str, Any]] = []
    if not args.no_profile:
        for key, server, flame in (("full", "gw_full", True), ("champion", "gw_champion", False)):
            log(
                f"py-spy profile of the gateway worker under {key} load ({args.profile_seconds:g} s per pass)"
            )
            profiles.append(
                profile_gateway(servers[server], by_key[key], loadgen, args.profile_seconds, key, flame)
            )
    log("stopping servers")
    stop_all()
    ledgers = ledger_counts([n for n in servers if n.startswith("gw_")])

    all_scenarios = [*scenarios, soak]
    summaries = {sc.key: summarize(sc) for sc in all_scenarios}
    notes += run_notes(summaries, checks, ledgers, loadgen, load_before)
    report: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
            "loadgen": loadgen,
            "connections": CONNECTIONS,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "soak_s": args.soak,
            "repository": str(
                repo.version_dir.relative_to(ROOT)
                if repo.version_dir.is_relative_to(ROOT)
                else repo.version_dir
            ),
            "champion": f"{repo.champion} ({repo.champion_strategy} of {', '.join(repo.champion_members)})",
            "best_member": repo.best_member,
            "mlserver_parallel_workers": args.mlserver_workers,
            "command": " ".join([".venv/bin/python", "benchmarks/run.py", *sys.argv[1:]]),
            "run_seconds": round(time.monotonic() - started, 1),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "main_order": [sc.key for sc in all_scenarios],
        "scenarios": summaries,
        "ratios": render.compute_ratios(summaries),
        "targets": render.evaluate_targets(summaries),
        "curves": curves,
        "inprocess": inproc,
        "loadgen_checks": checks,
        "gateway_counters": {
            k: v["gateway_counters"] for k, v in summaries.items() if v.get("gateway_counters")
        },
        "profiles": profiles,
        "ledger_rows": ledgers,
        "notes": notes,
    }
    write_report(report, args.out)
    return report


def summarize(sc: Scenario) -> dict[str, Any]:
    """A scenario's pooled rounds, with its label, RSS peak and gateway counters."""
    summary = tools.pool_rounds(sc.rounds, CONNECTIONS, sc.rows)
    summary.update(label=sc.label, server=sc.server, rows_per_request=sc.rows, rss_mb=sc.rss_peak)
    if sc.gateway and sc.counters:
        counts: dict[str, Any] = dict(sc.counters)
        served = counts.get("served_rows", 0.0)
        evaluated = counts.get("served", 0) + counts.get("shadow", 0) + counts.get("member", 0)
        counts["evaluations_per_served_row"] = round(evaluated / served, 2) if served else None
        summary["gateway_counters"] = counts
    return summary


def run_notes(
    summaries: dict[str, dict[str, Any]],
    checks: list[dict[str, Any]],
    ledgers: dict[str, int],
    loadgen: str,
    load_before: tuple[float, float, float],
) -> list[str]:
    notes = []
    other = [s["other_cpu_pct"] for s in summaries.values() if "other_cpu_pct" in s]
    if other:
        notes.append(
            f"CPU used by processes that are not ours while a scenario was measured (medians over rounds): "
            f"median {statistics.median(other):.0f}%, max {max(other):.0f}% of one core (load average "
            f"before the run {load_before[0]:.2f}). {os.cpu_count()} cores are shared by the server, the "
            "load generator and those: absolute numbers move with them, interleaved ratios much less"
        )
    floor_python = next((c for c in checks if c["key"] == "floor" and c["loadgen"] == "python"), None)
    if floor_python is not None:
        notes.append(
            f"the Python generator (loadgen.py) drove the floor to {floor_python['rps']:.0f} req/s where "
            f"{loadgen} reached {summaries['floor']['rps']:.0f}: its ceiling here is at least that"
        )
    for name, rows in ledgers.items():
        notes.append(f"ledger of {name}: {rows:,} prediction rows after a graceful stop")
    for key, s in summaries.items():
        counters = s.get("gateway_counters", {})
        dropped = counters.get("dropped")
        if dropped:
            reasons = ", ".join(
                f"{k.split(':', 1)[1]} {v:.0f}"
                for k, v in sorted(counters.items())
                if k.startswith("dropped:") and v
            )
            notes.append(f"{key}: the gateway dropped {dropped:.0f} pieces of background work ({reasons})")
    if loadgen == "hey":
        notes.append("hey prints times with 4 decimals: its latencies have a 0.1 ms resolution")
    return notes


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    md = out / "BENCHMARKS.md"
    doc = md.read_text() if md.exists() else "# Benchmarks\n"
    generated = render.render_results(report)
    md.write_text(render.splice_results(doc, generated))
    print(generated)


if __name__ == "__main__":
    sys.exit(main())
