"""The benchmark harness's pure helpers (benchmarks/tools.py, benchmarks/render.py), so the harness
cannot rot silently. The benchmarks themselves are not tests: `.venv/bin/python benchmarks/run.py`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import render, tools


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = sorted(np.random.default_rng(0).exponential(0.002, 501).tolist())
    assert tools.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_edges() -> None:
    assert math.isnan(tools.percentile([], 50))
    assert tools.percentile([3.0], 99) == 3.0
    assert tools.percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError, match="expected 0-100"):
        tools.percentile([1.0], 101)


def test_little_check_verdicts() -> None:
    # 8 connections, 4000 req/s, 1.95 ms mean -> 7.8 in flight: consistent
    ok = tools.little_check(8, 4000, 0.00195)
    assert ok["ok"] and ok["in_flight"] == pytest.approx(7.8) and ok["ratio"] == pytest.approx(0.975)
    # a latency figure that puts 16 requests in flight over 8 connections is wrong
    over = tools.little_check(8, 4000, 0.004)
    assert not over["ok"] and over["verdict"].startswith("inconsistent")
    # connections idle half the time: the client is the bottleneck
    under = tools.little_check(8, 2000, 0.002)
    assert not under["ok"] and under["verdict"].startswith("client-bound")


def test_summarize_closed_loop_numbers() -> None:
    lat = [0.001] * 98 + [0.010, 0.050]
    s = tools.summarize(lat, window_s=0.5, connections=1, rows_per_request=64, errors=2)
    assert s["requests"] == 100 and s["errors"] == 2
    assert s["rps"] == 200.0 and s["rows_per_s"] == 12_800.0
    assert s["p50_ms"] == 1.0 and s["max_ms"] == 50.0
    assert s["p99_ms"] == pytest.approx(10.4)  # between 10 ms (rank 98) and 50 ms (rank 99)
    assert s["mean_ms"] == pytest.approx(1.58)
    # one connection, 200 req/s x 1.58 ms = 0.316 in flight: the check says so
    assert s["little"]["ratio"] == pytest.approx(0.316) and not s["little"]["ok"]


def test_hey_csv_parse_and_window() -> None:
    text = (
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"
        "0.0010,0.0001,0.0000,0.0000,0.0009,0.0000,200,0.0000\n"
        "0.0020,0.0000,0.0000,0.0000,0.0019,0.0000,200,0.0011\n"
        "0.0030,0.0000,0.0000,0.0000,0.0029,0.0000,500,0.0032\n"
        "\n"
    )
    rows = tools.parse_hey_csv(text)
    assert rows == [(0.0, 0.001, 200), (0.0011, 0.002, 200), (0.0032, 0.003, 500)]
    lat, window, errors = tools.hey_window(rows)
    assert lat == [0.001, 0.002] and errors == 1
    assert window == pytest.approx(0.0062)
    assert tools.hey_window([]) == ([], 0.0, 0)


def test_pool_rounds_pools_latencies_and_keeps_spread() -> None:
    rounds = [
        {"latencies_s": [0.001] * 100, "window_s": 1.0, "errors": 0, "server_cpu_pct": 90.0},
        {"latencies_s": [0.002] * 50, "window_s": 1.0, "errors": 1, "server_cpu_pct": 70.0},
        {"latencies_s": [0.001] * 150, "window_s": 1.0, "errors": 0, "server_cpu_pct": 80.0},
    ]
    s = tools.pool_rounds(rounds, connections=1)
    assert s["requests"] == 300 and s["errors"] == 1 and s["rps"] == 100.0
    assert s["rps_per_round"] == [100.0, 50.0, 150.0]
    assert s["rps_spread_pct"] == 100.0  # (150 - 50) / mean 100
    assert s["server_cpu_pct"] == 80.0  # median over rounds
    assert s["max_ms"] == 2.0


def test_prometheus_counters_and_deltas() -> None:
    text = """# HELP gateway_predictions_total Rows predicted
# TYPE gateway_predictions_total counter
gateway_predictions_total{model="logreg",role="served"} 10.0
gateway_predictions_total{model="knn",role="shadow"} 7.0
gateway_predictions_total{model="tree",role="shadow"} 3.0
gateway_predictions_total{model="logreg",role="member"} 2.0
gateway_predictions_created{model="logreg",role="served"} 1.7e9
gateway_served_rows_total 10.0
gateway_dropped_work_total{reason="shadow_timeout"} 1.0
"""
    samples = tools.parse_prom_samples(text)
    assert samples[("gateway_predictions_total", (("model", "knn"), ("role", "shadow")))] == 7.0
    after = tools.gateway_counters(text)
    assert after == {
        "served_rows": 10.0,
        "served": 10.0,
        "shadow": 10.0,
        "member": 2.0,
        "dropped": 1.0,
        "dropped:shadow_timeout": 1.0,
    }
    before = {
        "served_rows": 4.0,
        "served": 4.0,
        "shadow": 4.0,
        "member": 0.0,
        "dropped": 1.0,
        "dropped:shadow_timeout": 1.0,
    }
    assert tools.counter_delta(before, after) == {
        "served_rows": 6.0,
        "served": 6.0,
        "shadow": 6.0,
        "member": 2.0,
        "dropped": 0.0,
        "dropped:shadow_timeout": 0.0,
    }


def test_collapse_profile_leaves_out_waiting_threads() -> None:
    lines = [
        "thread (1): MainThread;main (app.py:1);handle (service/gateway.py:10);Session.run (onnxruntime/capi/x.py:5) 6",
        "thread (1): MainThread;main (app.py:1);handle (service/gateway.py:12) 2",
        "thread (2): gateway-shadow;run (threading.py:9);Queue.get (queue.py:171);Condition.wait (threading.py:327) 90",
        "thread (3): gateway-ledger;_write (service/ledger.py:3) 2",
        "garbage line",
    ]
    p = tools.collapse_profile(lines)
    assert p["samples"] == 100 and p["busy_samples"] == 10
    assert p["threads"] == {"MainThread": 80.0, "gateway-ledger": 20.0}
    assert p["threads_in_service"] == {"MainThread": 100.0, "gateway-ledger": 100.0}
    assert p["modules"]["onnxruntime"] == 60.0 and p["modules"]["service/gateway.py"] == 20.0
    name, self_pct, total_pct = p["top_self"][0]
    assert name == "Session.run (onnxruntime/capi/x.py)" and self_pct == 60.0 and total_pct == 60.0
    assert ("handle (service/gateway.py)", 20.0, 80.0) in p["top_total"]


def summaries() -> dict[str, dict[str, float]]:
    return {
        "floor": {"rps": 4000.0, "p50_ms": 1.8, "p99_ms": 2.5, "max_ms": 9.0},
        "champion": {"rps": 3000.0, "p50_ms": 2.4, "p99_ms": 3.5, "max_ms": 12.0},
        "full": {"rps": 2000.0, "p50_ms": 3.0, "p99_ms": 5.0, "max_ms": 20.0},
        "mlserver_onnx": {"rps": 1000.0, "p50_ms": 7.0, "p99_ms": 9.0},
        "mlserver_sklearn": {"rps": 150.0},
        "soak": {"p99_ms": 2.9, "max_ms": 30.0},
    }


def test_targets_verdicts() -> None:
    targets = {t["target"]: t for t in render.evaluate_targets(summaries())}
    assert len(targets) == 7  # every target has a distinct name
    peer = next(t for n, t in targets.items() if n.startswith("full ensemble (1 worker)"))
    assert peer["value"] == 2.0 and peer["met"] is True
    sk = next(t for n, t in targets.items() if "20x" in n)
    assert sk["value"] == pytest.approx(2000 / 150) and sk["met"] is False
    champ = next(t for n, t in targets.items() if n.startswith("champion alone"))
    assert champ["value"] == 0.75 and champ["met"] is True
    p50 = next(t for n, t in targets.items() if "p50" in n)
    assert p50["value"] == 1.25 and p50["met"] is False
    assert next(t for n, t in targets.items() if n.endswith("p99 <= 3 ms"))["met"] is True
    assert next(t for n, t in targets.items() if n.endswith("max <= 25 ms"))["met"] is False
    missing = render.evaluate_targets({})
    assert all(t["met"] is None for t in missing)


def test_ratios_and_markdown() -> None:
    ratios = render.compute_ratios(summaries())
    assert ratios["champion / floor, req/s"] == 0.75
    assert ratios["full / champion, p50"] == 1.25
    assert math.isnan(ratios["2 workers / 1 worker (full ensemble), req/s"])
    table = render.markdown_table(["a", "b"], [["x|y", 1234.5], [None, math.nan], [True, 3]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1,234 |", "| – | – |", "| yes | 3 |"]


def test_render_and_splice_keep_hand_written_text() -> None:
    report = {
        "meta": {"date": "2026-11-26", "rounds": 3, "duration_s": 10, "loadgen": "hey"},
        "main_order": ["floor", "full"],
        "scenarios": {
            "floor": {"label": "floor", "rps": 4000.0, "p50_ms": 1.8, "little": {"ratio": 0.97}},
            "full": {"label": "full ensemble", "rps": 2000.0, "p50_ms": 3.0, "little": {"ratio": 0.98}},
        },
        "ratios": {"full / champion, p50": 1.25},
        "targets": render.evaluate_targets(summaries()),
        "notes": ["a note"],
        "profiles": [
            {
                "scenario": "full ensemble",
                "threads": {"MainThread": 80.0},
                "threads_in_service": {"MainThread": 50.0},
                "gil_threads": {"MainThread": 90.0},
                "gil_held_pct": 70.0,
                "top_self": [("Session.run (onnxruntime/x.py)", 60.0, 60.0)],
            }
        ],
    }
    generated = render.render_results(report)
    assert "| full ensemble | 2,000 |" in generated and "**not met**" in generated and "- a note" in generated
    assert "| MainThread | 80.00 | 50.00 | 90.00 |" in generated and "held in 70%" in generated
    doc = "# Benchmarks\n\nHow to run.\n"
    once = render.splice_results(doc, generated)
    assert (
        once.startswith(doc) and render.RESULTS_BEGIN in once and once.rstrip().endswith(render.RESULTS_END)
    )
    twice = render.splice_results(once + "\n## Analysis\n", "new numbers\n")
    assert twice.startswith(doc) and "new numbers" in twice and "full ensemble" not in twice
    assert twice.rstrip().endswith("## Analysis")


def test_sidebyside_configurations_parse_and_bad_ones_are_named(tmp_path: Path) -> None:
    from benchmarks.sidebyside import parse_config

    assert parse_config("process=GATEWAY_SHADOW_FRACTION=1+GATEWAY_LEDGER_ENABLED=false") == (
        "process",
        {"GATEWAY_SHADOW_FRACTION": "1", "GATEWAY_LEDGER_ENABLED": "false"},
        None,
    )
    assert parse_config("defaults=") == ("defaults", {}, None)
    (tmp_path / "service").mkdir()
    assert parse_config(f"before@{tmp_path}=") == ("before", {}, tmp_path)
    for bad in ("noequals", "=GATEWAY_X=1", "a=SHADOW=1", "a=GATEWAY_X", f"a@{tmp_path / 'nope'}="):
        with pytest.raises(ValueError, match="configuration"):
            parse_config(bad)
