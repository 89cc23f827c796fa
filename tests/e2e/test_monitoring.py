"""Monitoring assets (monitoring/): Prometheus config and alert rules, and the Grafana dashboard.

Quick checks run promtool and read the dashboard JSON. The slow level starts a real gateway and a real
Prometheus that scrapes it every second with the real alert rules loaded, sends live traffic, and then
runs every dashboard query and every alert expression through Prometheus's HTTP API: each must return
data, and every metric they name must be in the gateway's /metrics.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cli.procs import Managed, free_port
from tests.helpers import ROOT, BuiltRepo, Server, start_server, stop_server

MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "gateway.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
JOB = "ensemble-gateway"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (scripts/setup.sh installs Debian's prometheus package)"
)

# Grafana's built-in variables, as the test's queries resolve them (scrapes are 1 s apart here).
BUILTINS = {"__rate_interval": "15s", "__interval": "15s", "__range": "1h"}
# Names a query may use that the gateway does not export: Prometheus writes `up` for every target.
SYNTHETIC = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
COMPARISON = re.compile(r"==|!=|>=|<=|>|<")
IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


# --- reading the assets ------------------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """What each template variable stands for in a test query: the model regex matches every model,
    interval variables take their default."""
    values = dict(BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var["name"] == "model":
            values["model"] = ".*"
        elif var["type"] in ("interval", "custom", "constant"):
            values[var["name"]] = var["current"]["value"]
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise AssertionError(f"query uses ${name}, which is neither a variable nor a builtin: {expr}")
        return values[name]

    return VARIABLE.sub(one, expr)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL with the variables resolved) for every target of every panel."""
    values = variable_values(dashboard)
    return [
        (f"panel {p['id']} {p['title']!r} target {t['refId']}", substitute(t["expr"], values))
        for p in dashboard["panels"]
        for t in p["targets"]
    ]


def mask(expr: str) -> str:
    """``expr`` with string literals, label matchers {...} and ranges [...] blanked out (same length),
    so operators and names can be found with regular expressions."""
    out: list[str] = []
    quote: str | None = None
    depth = 0
    escaped = False
    for ch in expr:
        if quote is not None:
            out.append(" ")
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
            out.append(" ")
        elif ch in "{[":
            depth += 1
            out.append(ch)
        elif ch in "}]":
            depth -= 1
            out.append(ch)
        else:
            out.append(" " if depth else ch)
    return "".join(out)


def bool_form(expr: str) -> str:
    """Every comparison turned into a `bool` comparison: the expression then returns its series (0 or 1)
    whether or not the alert would fire, so an empty answer means missing data, not a quiet alert."""
    masked = mask(expr)
    out = expr
    for m in reversed(list(COMPARISON.finditer(masked))):
        if not masked[m.end() :].lstrip().startswith("bool"):
            out = out[: m.end()] + " bool" + out[m.end() :]
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, labels or grouping labels)."""
    masked = GROUPING.sub(lambda m: " " * len(m.group(0)), mask(expr))
    return {
        m.group(1)
        for m in IDENTIFIER.finditer(masked)
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS
    }


def test_promql_helpers() -> None:
    expr = 'sum by (model) (rate(a_total{x!="1>2"}[5m])) / on (model) b > 0.5 and up{job="j"} == 1'
    assert metric_names(expr) == {"a_total", "b", "up"}
    assert bool_form(expr) == (
        'sum by (model) (rate(a_total{x!="1>2"}[5m])) / on (model) b > bool 0.5 and up{job="j"} == bool 1'
    )
    assert bool_form("a >= bool 1") == "a >= bool 1"
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) > 1e-3") == {"h_bucket"}


# --- quick checks --------------------------------------------------------------------------------------
def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_check_config() -> None:
    done = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


@needs_promtool
def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_alert_unit_tests() -> None:
    """Each alert fires on synthetic series where it should, and not in the nearby quiet cases."""
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == {r["alert"] for r in alert_rules()}


def test_prometheus_config_scrapes_the_gateway() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    assert job["static_configs"] == [{"targets": ["127.0.0.1:3000"]}]
    assert config["rule_files"] == ["alerts.yml"]
    assert all(
        r["for"] and r["annotations"]["summary"] and r["annotations"]["description"] for r in alert_rules()
    )


def test_dashboard_json_is_importable() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query"
    assert model["definition"] == "label_values(gateway_model_info, model)"
    assert model["query"]["query"] == model["definition"]
    assert model["multi"] is True and model["includeAll"] is True and model["allValue"] == ".*"

    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no target"
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"] == p["datasource"], p["title"]
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
    # Every query resolves all its variables.
    for where, expr in dashboard_queries(dashboard):
        assert "$" not in expr, where


def test_dashboard_json_is_generated_from_the_script() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboard", MONITORING / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT == DASHBOARD
    assert DASHBOARD.read_text() == module.render(), "stale: run python monitoring/build_dashboard.py"


def test_grafana_provisioning_files() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "gateway.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# --- a real gateway scraped by a real Prometheus ----------------------------------------------------------
@dataclass(frozen=True)
class Live:
    gateway: Server
    prometheus: str
    at: float
    """Evaluation time of every query: just after Prometheus scraped the end of the traffic."""
    exposition: str
    """The gateway's /metrics text at that point."""
    prometheus_log: Path


def start_prometheus(folder: Path, gateway_port: int) -> tuple[Managed, str]:
    """Prometheus on 127.0.0.1 and a free port, in its own process group, scraping the gateway every
    second with the real job and rule file, and evaluating the rules every second."""
    assert PROMETHEUS is not None
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway_port}"]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    managed = Managed(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={path}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        folder / "prometheus.log",
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    managed.wait_http(f"{url}/-/ready", 30)
    return managed, url


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query; AssertionError with Prometheus's message if it is not valid PromQL."""
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    r = httpx.get(f"{prometheus}/api/v1/query", params=params, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}\n -> {r.status_code} {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(prometheus: str, expr: str) -> float | None:
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


def wait_for(what: str, check: Any, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; see {log}")
        time.sleep(0.2)


def drive_traffic(server: Server, records: list[dict[str, Any]]) -> int:
    """Predictions from every variant (with request ids), bad requests, then a label for every row
    served, a duplicate and an unknown id. Returns the number of rows served (and labelled)."""
    rng = random.Random(0)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        models = client.get("/models").json()
        variants = [m["name"] for m in models["members"]] + [e["name"] for e in models["ensembles"]]
        labels: list[dict[str, Any]] = []
        for i in range(2 * len(variants) + 10):
            batch = [records[(5 * i + j) % len(records)] for j in range(5)]
            body: dict[str, Any] = {"records": batch, "request_id": f"monitoring-{i}"}
            if i < 2 * len(variants):
                body["variant"] = variants[i % len(variants)]
            r = client.post("/predict", json=body)
            assert r.status_code == 200, r.text
            labels += [
                {"request_id": f"monitoring-{i}", "row": j, "label": rng.choice(["churn", "stay"])}
                for j in range(len(batch))
            ]
        bad = [b"{", b'{"records": []}', json.dumps({"records": records[:1], "variant": "ghost"}).encode()]
        for content in bad:
            r = client.post("/predict", content=content, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (content, r.status_code, r.text)
        # Shadow variants are recorded after the response: /feedback waits for them (a barrier).
        r = client.post("/feedback", json={"labels": labels})
        assert r.status_code == 200 and r.json()["joined"] == len(labels), r.text
        extra = [labels[0], {"request_id": "monitoring-unknown", "row": 0, "label": "stay"}]
        r = client.post("/feedback", json={"labels": extra})
        assert r.status_code == 200 and r.json()["duplicate"] == 1 and r.json()["unknown_id"] == 1, r.text
        assert client.get("/compare").status_code == 200  # publishes the online calibration gauges
        # /drift publishes the drift gauges; the live counts reach the ledger every flush interval.
        deadline = time.monotonic() + 5
        while (doc := client.get("/drift").json())["rows"] < len(labels) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert doc["rows"] == len(labels), doc
    return len(labels)


@pytest.fixture(scope="module")
def live(
    built_repo: BuiltRepo, feature_records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    if PROMETHEUS is None:
        pytest.skip("prometheus not on PATH (scripts/setup.sh installs Debian's prometheus package)")
    folder = tmp_path_factory.mktemp("monitoring")
    # Every request gets its shadow variants, so every model is scored and compared.
    server = start_server(
        built_repo.root,
        folder / "bentoml.log",
        extra_env={"GATEWAY_SHADOW_FRACTION": "1", "GATEWAY_DRIFT_FLUSH_INTERVAL_S": "0.2"},
    )
    prometheus: Managed | None = None
    try:
        prometheus, url = start_prometheus(folder, server.port)
        log = prometheus.log
        scrapes = f'count_over_time(up{{job="{JOB}"}}[1m])'
        # Counters must be scraped at their starting values before traffic, or rate() sees no change.
        wait_for("two scrapes of the gateway", lambda: (scalar(url, scrapes) or 0) >= 2, 20, log)
        started = time.time()
        rows = drive_traffic(server, feature_records)
        final = {
            "sum(gateway_served_rows_total)": rows,
            'sum(gateway_labels_total{outcome="joined"})': rows,
            'sum(gateway_labels_total{outcome="unknown_id"})': 1,
            "max(gateway_input_drift_rows)": rows,
        }
        wait_for(
            "Prometheus to scrape the traffic's final counts",
            lambda: all(scalar(url, q) == v for q, v in final.items()) and (scalar(url, scrapes) or 0) >= 5,
            20,
            log,
        )
        at = time.time()
        # Panels use rate(...[15s]) here ($__rate_interval): the traffic must still be inside it.
        assert at - started < 12, f"traffic and scrapes took {at - started:.1f}s; see {log}"
        exposition = httpx.get(f"{server.url}/metrics", timeout=10).text
        yield Live(gateway=server, prometheus=url, at=at, exposition=exposition, prometheus_log=log)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_server(server)


# Each live test, fixture included (and the session's repository build when it runs first).
bounded = pytest.mark.timeout(240)


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.slow
@bounded
def test_every_dashboard_query_returns_data(live: Live) -> None:
    failures = []
    for where, expr in dashboard_queries(load_dashboard()):
        result = query(live.prometheus, expr, live.at)
        if not has_finite_value(result):
            failures.append(f"{where}: {expr}\n  -> {result[:3]}")
    assert not failures, "dashboard queries without data:\n" + "\n".join(failures)


@pytest.mark.slow
@bounded
def test_every_alert_expression_returns_data(live: Live) -> None:
    failures = []
    for rule in alert_rules():
        expr = bool_form(rule["expr"])
        if not query(live.prometheus, expr, live.at):
            failures.append(f"{rule['alert']}: {expr}")
    assert not failures, "alert expressions without data:\n" + "\n".join(failures)


@pytest.mark.slow
@bounded
def test_prometheus_loads_and_evaluates_every_rule(live: Live) -> None:
    expected = {r["alert"] for r in alert_rules()}

    def rules() -> list[dict[str, Any]]:
        body = httpx.get(f"{live.prometheus}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    def evaluated() -> bool:
        return all(not r["lastEvaluation"].startswith("0001-") for r in rules())

    wait_for("every rule to be evaluated", evaluated, 10, live.prometheus_log)
    loaded = rules()
    assert {r["name"] for r in loaded} == expected
    broken = [f"{r['name']}: {r.get('lastError')}" for r in loaded if r["health"] != "ok"]
    assert not broken, broken


@pytest.mark.slow
@bounded
def test_every_referenced_metric_is_exported(live: Live) -> None:
    """A typo in a metric name would otherwise be a panel that silently shows nothing."""
    exported = {s.name for family in text_string_to_metric_families(live.exposition) for s in family.samples}
    dashboard = load_dashboard()
    referenced: dict[str, set[str]] = {}
    for where, expr in dashboard_queries(dashboard):
        for name in metric_names(expr):
            referenced.setdefault(name, set()).add(where)
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            (name,) = re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", var["definition"])
            referenced.setdefault(name, set()).add(f"variable {var['name']}")
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            referenced.setdefault(name, set()).add(f"alert {rule['alert']}")
    assert "gateway_feedback_total" in referenced and "gateway_request_seconds_bucket" in referenced
    missing = {name: sorted(where) for name, where in referenced.items() if name not in exported | SYNTHETIC}
    assert not missing, f"metrics not in the gateway's /metrics: {missing}"
