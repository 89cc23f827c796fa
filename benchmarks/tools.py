"""Pure helpers of the benchmark harness: percentiles, the Little's-law check, pooling rounds, and
parsing what the tools print (hey's CSV, Prometheus text, py-spy's collapsed stacks).

Nothing here starts a process or touches the network, so tests/benchmarks/test_bench_tools.py can pin
it. Latencies are in seconds everywhere inside; summaries show milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LITTLE_LOW = 0.75
"""A closed loop keeps every connection busy except while the client turns a response into the next
request, so throughput x mean latency sits a little under the connection count. Far under it means
the client is the bottleneck (or latencies are under-reported)."""
LITTLE_HIGH = 1.05
"""Over the connection count is impossible for a closed loop: the latency or the count is wrong."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, interpolating linearly between the two
    closest ranks (numpy's default method). NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q: expected 0-100, got {q}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = (n - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def little_check(connections: int, rps: float, mean_s: float) -> dict[str, Any]:
    """Little's law for a closed loop: in-flight requests L = throughput x mean latency should be close
    to (and not above) the number of connections."""
    in_flight = rps * mean_s
    ratio = in_flight / connections if connections else math.nan
    ok = LITTLE_LOW <= ratio <= LITTLE_HIGH
    if ok:
        verdict = "consistent"
    elif ratio > LITTLE_HIGH:
        verdict = "inconsistent: more in flight than connections (latency or count wrong)"
    else:
        verdict = "client-bound: connections idle between requests (load generator is the bottleneck?)"
    return {
        "connections": connections,
        "in_flight": round(in_flight, 3),
        "ratio": round(ratio, 3),
        "ok": ok,
        "verdict": verdict,
    }


def summarize(
    latencies_s: Iterable[float],
    window_s: float,
    connections: int,
    rows_per_request: int = 1,
    errors: int = 0,
) -> dict[str, Any]:
    """Throughput, latency percentiles (ms) and the Little's-law check of one measured window."""
    lat = sorted(latencies_s)
    n = len(lat)
    rps = n / window_s if window_s > 0 else math.nan
    mean = sum(lat) / n if n else math.nan
    out: dict[str, Any] = {
        "requests": n,
        "errors": errors,
        "window_s": round(window_s, 3),
        "rps": round(rps, 1),
        "rows_per_s": round(rps * rows_per_request, 1),
        "mean_ms": _ms(mean),
        "p50_ms": _ms(percentile(lat, 50)),
        "p90_ms": _ms(percentile(lat, 90)),
        "p99_ms": _ms(percentile(lat, 99)),
        "p999_ms": _ms(percentile(lat, 99.9)),
        "max_ms": _ms(lat[-1] if lat else math.nan),
    }
    out["little"] = little_check(connections, rps, mean) if n else little_check(connections, 0.0, 0.0)
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3) if not math.isnan(seconds) else math.nan


def parse_hey_csv(text: str) -> list[tuple[float, float, int]]:
    """hey's `-o csv` rows as (start offset s, response time s, status code); the header and blank lines
    are skipped. hey prints times with 4 decimals: a resolution of 0.1 ms."""
    rows: list[tuple[float, float, int]] = []
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) < 8 or parts[0] == "response-time":
            continue
        rows.append((float(parts[7]), float(parts[0]), int(parts[6])))
    return rows


def hey_window(rows: Sequence[tuple[float, float, int]]) -> tuple[list[float], float, int]:
    """(latencies of successful requests, measured window s, error count) from parsed hey rows. The
    window runs from the first request's start to the last response, so a run's ramp-down counts."""
    if not rows:
        return [], 0.0, 0
    start = min(r[0] for r in rows)
    end = max(r[0] + r[1] for r in rows)
    ok = [r[1] for r in rows if 200 <= r[2] < 300]
    return ok, end - start, len(rows) - len(ok)


def pool_rounds(
    rounds: Sequence[Mapping[str, Any]], connections: int, rows_per_request: int = 1
) -> dict[str, Any]:
    """One summary over several rounds of the same scenario: latencies pooled, throughput = all
    requests / all measured time; per-round throughput kept to show the spread."""
    lat: list[float] = []
    window = 0.0
    errors = 0
    for r in rounds:
        lat.extend(r["latencies_s"])
        window += r["window_s"]
        errors += r.get("errors", 0)
    out = summarize(lat, window, connections, rows_per_request, errors)
    per_round = [len(r["latencies_s"]) / r["window_s"] for r in rounds if r["window_s"] > 0]
    for key in ("server_cpu_pct", "loadgen_cpu_pct", "other_cpu_pct", "other_cpu_before_pct"):
        vals = sorted(r[key] for r in rounds if key in r)
        if vals:
            out[key] = percentile(vals, 50)
    out["rounds"] = len(rounds)
    out["rps_per_round"] = [round(x, 1) for x in per_round]
    out["rps_spread_pct"] = (
        round(100 * (max(per_round) - min(per_round)) / (sum(per_round) / len(per_round)), 1)
        if per_round
        else math.nan
    )
    return out


def ratio(a: float | None, b: float | None) -> float:
    """a / b, NaN when either is missing or b is 0."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


IDLE_LEAVES = frozenset(
    {
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
        "BaseSelector.select (selectors.py)",
        "EpollSelector.select (selectors.py)",
    }
)
"""Leaf frames of a thread that waits (a queue's lock with a timeout is not seen as idle by py-spy)."""


def collapse_profile(
    lines: Iterable[str], top: int = 15, idle: frozenset[str] = IDLE_LEAVES
) -> dict[str, Any]:
    """py-spy `--format raw` (collapsed stacks `frame;frame;... count`, root first; with `--threads`
    the first frame names the thread) to a summary of the busy samples (leaf not in ``idle``):
    share per thread (and how much of each thread's time is inside service/ code), per module of the
    leaf frame, the top functions by self time, and the gateway's
    own functions (service/...) by inclusive time, each function as (name, self %, total %);
    percentages of busy samples."""
    total = busy = 0
    threads: dict[str, int] = {}
    in_service: dict[str, int] = {}
    modules: dict[str, int] = {}
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    for line in lines:
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = stack.split(";")
        total += count
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "all"
        funcs = [_short_frame(f) for f in frames if not f.startswith(("thread", "process"))]
        if not funcs or funcs[-1] in idle:
            continue
        busy += count
        thread_name = thread.split(": ", 1)[-1] if ": " in thread else thread
        threads[thread_name] = threads.get(thread_name, 0) + count
        if any(" (service/" in f for f in funcs):
            in_service[thread_name] = in_service.get(thread_name, 0) + count
        module = _module_of(funcs[-1])
        modules[module] = modules.get(module, 0) + count
        self_counts[funcs[-1]] = self_counts.get(funcs[-1], 0) + count
        for f in set(funcs):
            incl_counts[f] = incl_counts.get(f, 0) + count
    if busy == 0:
        return {
            "samples": total,
            "busy_samples": 0,
            "threads": {},
            "modules": {},
            "top_self": [],
            "top_total": [],
        }

    def pct(n: int) -> float:
        return round(100 * n / busy, 1)

    by_self = sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]
    # Inclusive time is told for the gateway's own functions: framework frames (event loop, ASGI
    # middleware) include everything and say nothing.
    by_incl = sorted(
        ((f, n) for f, n in incl_counts.items() if f.endswith(")") and " (service/" in f),
        key=lambda kv: -kv[1],
    )[:top]
    return {
        "samples": total,
        "busy_samples": busy,
        "threads": {t: pct(n) for t, n in sorted(threads.items(), key=lambda kv: -kv[1])},
        # share of each thread's own busy samples spent inside the gateway's code (service/...)
        "threads_in_service": {t: round(100 * in_service.get(t, 0) / n, 1) for t, n in threads.items()},
        "modules": {m: pct(n) for m, n in sorted(modules.items(), key=lambda kv: -kv[1])[:top]},
        "top_self": [(f, pct(n), pct(incl_counts.get(f, 0))) for f, n in by_self],
        "top_total": [(f, pct(self_counts.get(f, 0)), pct(n)) for f, n in by_incl],
    }


def _module_of(short_frame: str) -> str:
    """`func (pkg/file.py)` -> `pkg` (or the path itself for the gateway's own modules: service/, contract/)."""
    _, sep, where = short_frame.partition(" (")
    where = where.rstrip(")") if sep else short_frame
    head, _, tail = where.partition("/")
    if head in ("service", "contract") or not tail:
        return where
    return head


def _short_frame(frame: str) -> str:
    """`func (pkg/module.py:12)` -> `func (pkg/module.py)`: one entry per function, not per line
    (py-spy already prints paths relative to their sys.path entry)."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    file = where[:-1] if where.endswith(")") else where
    head, colon, line = file.rpartition(":")
    if colon and line.isdigit():
        file = head
    return f"{name} ({file})"


def parse_prom_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text exposition to {(sample name, sorted labels): value}; comments skipped. Enough
    for the gateway's counters (label values without escaped quotes or commas)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            label_text, _, value_text = rest.rpartition("}")
            labels = []
            for part in label_text.split(","):
                if "=" in part:
                    k, _, v = part.partition("=")
                    labels.append((k.strip(), v.strip().strip('"')))
            key = (name, tuple(sorted(labels)))
        else:
            name, _, value_text = line.partition(" ")
            key = (name, ())
        try:
            out[key] = float(value_text.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def gateway_counters(text: str) -> dict[str, float]:
    """The gateway counters the report needs: served rows, predictions by role, dropped work (in all
    and as ``dropped:<reason>``)."""
    out = {"served_rows": 0.0, "served": 0.0, "shadow": 0.0, "member": 0.0, "dropped": 0.0}
    for (name, labels), value in parse_prom_samples(text).items():
        lab = dict(labels)
        if name == "gateway_served_rows_total":
            out["served_rows"] += value
        elif name == "gateway_predictions_total" and lab.get("role") in ("served", "shadow", "member"):
            out[lab["role"]] += value
        elif name == "gateway_dropped_work_total":
            out["dropped"] += value
            key = f"dropped:{lab.get('reason', '?')}"
            out[key] = out.get(key, 0.0) + value
    return out


def counter_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after - before, key by key."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
