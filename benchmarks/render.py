"""The report: the issue's targets, the ratios, and the generated Markdown of BENCHMARKS.md.

Pure functions of a results.json document (tests/benchmarks/test_bench_tools.py renders a small one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from benchmarks.tools import LITTLE_HIGH, LITTLE_LOW, ratio

RESULTS_BEGIN = "<!-- results:begin (written by benchmarks/run.py; edit outside these markers) -->"
RESULTS_END = "<!-- results:end -->"


def compute_ratios(s: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The headline ratios between scenario summaries (NaN where a scenario was not measured)."""

    def g(key: str, f: str) -> float:
        v = s.get(key, {}).get(f)
        return math.nan if v is None else float(v)

    out = {
        "champion / floor, req/s": ratio(g("champion", "rps"), g("floor", "rps")),
        "champion / floor, p50": ratio(g("champion", "p50_ms"), g("floor", "p50_ms")),
        "full / champion, p50": ratio(g("full", "p50_ms"), g("champion", "p50_ms")),
        "full / champion, req/s": ratio(g("full", "rps"), g("champion", "rps")),
        "full / best one-model peer (MLServer + ORT), req/s": ratio(
            g("full", "rps"), g("mlserver_onnx", "rps")
        ),
        "full / best one-model peer (MLServer + ORT), p99": ratio(
            g("full", "p99_ms"), g("mlserver_onnx", "p99_ms")
        ),
        "full / MLServer + mlserver-sklearn, req/s": ratio(g("full", "rps"), g("mlserver_sklearn", "rps")),
        "64-row batches / single rows (full ensemble), rows/s": ratio(
            g("batch64", "rows_per_s"), g("full", "rows_per_s")
        ),
        "gateway serving best member alone / floor on it, req/s": ratio(
            g("members_1", "rps"), g("floor_member", "rps")
        ),
        "floor on best member / MLServer + ORT on it, req/s": ratio(
            g("floor_member", "rps"), g("mlserver_onnx", "rps")
        ),
        "2 workers / 1 worker (full ensemble), req/s": ratio(g("full_w2", "rps"), g("full", "rps")),
    }
    return {k: round(v, 3) if not math.isnan(v) else v for k, v in out.items()}


def evaluate_targets(s: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets from scenario summaries keyed by scenario name (missing ones: not measured).

    Keys used: floor, champion, full, mlserver_onnx, mlserver_sklearn, soak (the 30 s run)."""
    targets: list[dict[str, Any]] = []

    def get(key: str, field: str) -> float:
        v = s.get(key, {}).get(field)
        return math.nan if v is None else float(v)

    def add(name: str, value: float, op: str, threshold: float, unit: str = "") -> None:
        met: bool | None
        if math.isnan(value) or math.isnan(threshold):
            met = None
        else:
            met = value >= threshold if op == ">=" else value <= threshold
        targets.append(
            {"target": name, "value": value, "op": op, "threshold": threshold, "unit": unit, "met": met}
        )

    add(
        "full ensemble (1 worker) req/s >= 2x best peer serving one ONNX model (MLServer + ORT)",
        ratio(get("full", "rps"), get("mlserver_onnx", "rps")),
        ">=",
        2.0,
        "x",
    )
    add(
        "full ensemble p99 no worse than that peer's p99",
        get("full", "p99_ms"),
        "<=",
        get("mlserver_onnx", "p99_ms"),
        "ms",
    )
    add(
        "full ensemble req/s >= 20x MLServer + mlserver-sklearn",
        ratio(get("full", "rps"), get("mlserver_sklearn", "rps")),
        ">=",
        20.0,
        "x",
    )
    add(
        "champion alone req/s >= 0.7x the floor",
        ratio(get("champion", "rps"), get("floor", "rps")),
        ">=",
        0.7,
        "x",
    )
    add(
        "full ensemble p50 <= 1.15x champion alone p50",
        ratio(get("full", "p50_ms"), get("champion", "p50_ms")),
        "<=",
        1.15,
        "x",
    )
    add("30 s run, 8 connections, full ensemble: p99 <= 3 ms", get("soak", "p99_ms"), "<=", 3.0, "ms")
    add("30 s run, 8 connections, full ensemble: max <= 25 ms", get("soak", "max_ms"), "<=", 25.0, "ms")
    return targets


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: numbers rounded, NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells go through fmt(); `|` inside cells is escaped."""

    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def met_mark(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**not met**")


def render_results(report: Mapping[str, Any]) -> str:
    """The generated part of BENCHMARKS.md from a results.json document."""
    meta = report["meta"]
    sc: Mapping[str, Mapping[str, Any]] = report["scenarios"]
    parts: list[str] = []
    parts.append(
        f"Run of {meta.get('date', '?')}: {meta.get('rounds', '?')} interleaved round(s) of "
        f"{meta.get('duration_s', '?')} s per scenario after a {meta.get('warmup_s', '?')} s warm-up, "
        f"{meta.get('connections', '?')} keep-alive connections, closed loop, load generator "
        f"`{meta.get('loadgen', '?')}`; machine: {meta.get('machine', '?')}. Whole run: "
        f"{fmt(meta.get('run_seconds'), 0)} s. Repository `{meta.get('repository', '?')}`: champion "
        f"`{meta.get('champion', '?')}`, best member `{meta.get('best_member', '?')}`."
    )
    rows = []
    for key in report.get("main_order", list(sc)):
        if key not in sc:
            continue
        s = sc[key]
        rows.append(
            [
                s.get("label", key),
                s.get("rps"),
                s.get("rows_per_s") if s.get("rows_per_request", 1) != 1 else None,
                s.get("p50_ms"),
                s.get("p99_ms"),
                s.get("max_ms"),
                s.get("rss_mb"),
                s.get("little", {}).get("ratio"),
                s.get("rps_spread_pct"),
                "/".join(fmt(s.get(k), 0) for k in ("server_cpu_pct", "loadgen_cpu_pct", "other_cpu_pct")),
                s.get("errors", 0),
            ]
        )
    parts.append("### Single-row serving (and 64-row batches)")
    parts.append(
        markdown_table(
            [
                "server",
                "req/s",
                "rows/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "RSS MB",
                "Little λW/N",
                "round spread %",
                "CPU % server/loadgen/other",
                "errors",
            ],
            rows,
        )
    )
    parts.append(
        "Little λW/N: throughput x mean latency / connections; a closed loop gives just under 1 "
        f"(accepted {LITTLE_LOW}-{LITTLE_HIGH}). RSS: peak over the measured slots of the "
        "resident memory summed over the server's process tree (sampled every second). CPU %: of one core during the measured "
        "window (median over rounds): the server's process tree, the load generator, and everything else "
        "on the machine (other servers idle, other users' jobs); the machine has 2 cores, so server + "
        "load generator + other near 200 means the machine, not the server, is the limit."
    )
    r = report.get("ratios", {})
    if r:
        parts.append("### Ratios")
        parts.append(markdown_table(["ratio", "value"], [[k, v] for k, v in r.items()]))
    targets = report.get("targets", [])
    if targets:
        parts.append("### Targets from the issue")
        parts.append(
            markdown_table(
                ["target", "measured", "threshold", "verdict"],
                [
                    [
                        t["target"],
                        f"{fmt(t['value'])} {t['unit']}".strip(),
                        f"{t['op']} {fmt(t['threshold'])} {t['unit']}".strip(),
                        met_mark(t["met"]),
                    ]
                    for t in targets
                ],
            )
        )
    curves = report.get("curves", {})
    for name, title in (("members", "Members evaluated per request"), ("workers", "Workers")):
        pts = curves.get(name, [])
        if not pts:
            continue
        parts.append(f"### Curve: {title}")
        parts.append(
            markdown_table(
                ["point", "what runs", "req/s", "p50 ms", "p99 ms", "max ms", "RSS MB", "Little λW/N"],
                [
                    [
                        p["point"],
                        p.get("what", ""),
                        sc.get(p["scenario"], {}).get("rps"),
                        sc.get(p["scenario"], {}).get("p50_ms"),
                        sc.get(p["scenario"], {}).get("p99_ms"),
                        sc.get(p["scenario"], {}).get("max_ms"),
                        sc.get(p["scenario"], {}).get("rss_mb"),
                        sc.get(p["scenario"], {}).get("little", {}).get("ratio"),
                    ]
                    for p in pts
                ],
            )
        )
    inproc = report.get("inprocess", {})
    if inproc.get("members"):
        parts.append("### In-process single-row latency: onnxruntime vs scikit-learn")
        parts.append(inproc.get("note", ""))
        parts.append(
            markdown_table(
                [
                    "member",
                    "test acc",
                    "ORT µs",
                    "sklearn µs",
                    "sklearn/ORT",
                    "card ORT µs",
                    "card sklearn µs",
                    "refit = card",
                ],
                [
                    [
                        m["member"],
                        m.get("test_accuracy"),
                        m.get("onnx_us"),
                        m.get("sklearn_us"),
                        ratio(m.get("sklearn_us"), m.get("onnx_us")),
                        m.get("card_onnx_us"),
                        m.get("card_sklearn_us"),
                        m.get("refit_matches_card"),
                    ]
                    for m in inproc["members"]
                ],
            )
        )
    checks = report.get("loadgen_checks", [])
    if checks:
        parts.append("### Load generator cross-check (same server, both generators)")
        parts.append(
            markdown_table(
                ["server", "generator", "req/s", "p50 ms", "p99 ms", "max ms", "Little λW/N"],
                [
                    [
                        c["server"],
                        c["loadgen"],
                        c.get("rps"),
                        c.get("p50_ms"),
                        c.get("p99_ms"),
                        c.get("max_ms"),
                        c.get("little", {}).get("ratio"),
                    ]
                    for c in checks
                ],
            )
        )
    extra = report.get("gateway_counters", {})
    if extra:
        parts.append("### Gateway counters over each scenario's slots (from /metrics): was the work done?")
        parts.append(
            "Predictions counted by role (a row answered = served; members run for the answer = member; "
            "shadow variants = shadow); evaluations per served row = all three / served rows: the full "
            "ensemble should evaluate every member and combiner once per row."
        )
        parts.append(
            markdown_table(
                [
                    "scenario",
                    "served rows",
                    "served",
                    "shadow",
                    "member",
                    "evaluations per served row",
                    "dropped work",
                ],
                [
                    [
                        k,
                        v.get("served_rows"),
                        v.get("served"),
                        v.get("shadow"),
                        v.get("member"),
                        v.get("evaluations_per_served_row"),
                        v.get("dropped"),
                    ]
                    for k, v in extra.items()
                ],
            )
        )
    for prof in report.get("profiles", []):
        parts.extend(render_profile(prof))
    notes = report.get("notes", [])
    if notes:
        parts.append("### Notes from this run")
        parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(p for p in parts if p) + "\n"


def render_profile(prof: Mapping[str, Any]) -> list[str]:
    """One py-spy profile's sections."""
    if not prof.get("top_self"):
        return [prof.get("note", "")] if prof.get("note") else []
    parts = [f"### py-spy profile of the gateway worker: {prof.get('scenario', '?')}", prof.get("note", "")]
    gil = prof.get("gil_threads", {})
    if gil:
        parts.append(f"The GIL was held in {fmt(prof.get('gil_held_pct'), 0)}% of the GIL samples' ticks.")
    inside = prof.get("threads_in_service", {})
    parts.append(
        markdown_table(
            [
                "thread",
                "% of busy samples",
                "% of the thread's samples inside service/ code",
                "% of GIL samples",
            ],
            [[t, v, inside.get(t), gil.get(t)] for t, v in prof.get("threads", {}).items()],
        )
    )
    if prof.get("modules"):
        parts.append("Where the busy samples' innermost frame is (module or package):")
        parts.append(
            markdown_table(["module", "% of busy samples"], [[m, v] for m, v in prof["modules"].items()])
        )
    parts.append("Top functions by own time (self), % of busy samples:")
    parts.append(
        markdown_table(["function", "self %", "total %"], [[f, a, b] for f, a, b in prof["top_self"]])
    )
    if prof.get("top_total"):
        parts.append("The gateway's own functions (service/) by inclusive time (total), % of busy samples:")
        parts.append(markdown_table(["function", "total %"], [[f, b] for f, _a, b in prof["top_total"]]))
    return parts


def splice_results(document: str, generated: str) -> str:
    """Replace what lies between the results markers (appending the markers when absent), keeping the
    hand-written text around them."""
    block = f"{RESULTS_BEGIN}\n{generated.rstrip()}\n{RESULTS_END}"
    if RESULTS_BEGIN in document and RESULTS_END in document:
        head, rest = document.split(RESULTS_BEGIN, 1)
        _, tail = rest.split(RESULTS_END, 1)
        return head + block + tail
    sep = "" if document.endswith("\n") or not document else "\n"
    return document + sep + ("\n" if document else "") + block + "\n"
