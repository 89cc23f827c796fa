"""Writes the Grafana dashboard monitoring/grafana/dashboards/gateway.json (standard library only).

    python monitoring/build_dashboard.py           # regenerate the JSON
    python monitoring/build_dashboard.py --check   # exit 1 if the checked-in JSON is stale

The JSON is what Grafana imports; this script is where it is edited, so panel ids and positions stay
consistent. Every query runs against a real gateway and Prometheus in tests/e2e/test_monitoring.py.
Metric names and labels: service/metrics.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards" / "gateway.json"
UID = "ensemble-gateway"
DS = {"type": "prometheus", "uid": "${datasource}"}
QUANTILES = (0.5, 0.95, 0.99)

Panel = dict[str, Any]


def target(expr: str, legend: str, ref: str = "A", *, instant: bool = False) -> dict[str, Any]:
    """One PromQL query of a panel."""
    out: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }
    if instant:
        out["format"] = "table"
    return out


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    minimum: float | None = 0,
    maximum: float | None = None,
    overrides: list[dict[str, Any]] | None = None,
    stack: bool = False,
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10 if stack else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def table(title: str, description: str, expr: str) -> Panel:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target(expr, "", instant=True)],
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }


def quantiles(metric: str, by: str, selector: str) -> list[dict[str, Any]]:
    """p50/p95/p99 of a histogram per ``by`` label, one target each."""
    return [
        target(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{{{{{by}}}}} p{round(q * 100)}",
            ref=chr(ord("A") + i),
        )
        for i, q in enumerate(QUANTILES)
    ]


def dashed(ref: str) -> dict[str, Any]:
    """Override: draw the series of query ``ref`` dashed (offline reference lines)."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
    }


# Every request the gateway times or refuses: answered predictions (JSON and OIP) and rejections.
REQUESTS = (
    "(sum(rate(gateway_request_seconds_count[$__rate_interval]))"
    " + sum(rate(gateway_rejected_requests_total[$__rate_interval])))"
)


def panels() -> list[tuple[int, int, Panel]]:
    """(width, height, panel) in reading order; positions are laid out by ``layout``."""
    return [
        (
            8,
            6,
            table(
                "Routing roles",
                "Each model's current role: champion answers, challengers take A/B shares, shadows run "
                "after the response on a hash sample of requests.",
                'max by (model, role) (gateway_routing_role{model=~"$model"}) == 1',
            ),
        ),
        (
            16,
            6,
            table(
                "Loaded models",
                "Models of the repository version being served (gateway_model_info).",
                'max by (repository, version, model, kind, family) (gateway_model_info{model=~"$model"}) == 1',
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Request rate by variant",
                "Prediction requests answered per second, by the variant that answered and the protocol.",
                [
                    target(
                        'sum by (variant, protocol) (rate(gateway_request_seconds_count{variant=~"$model"}'
                        "[$__rate_interval]))",
                        "{{variant}} ({{protocol}})",
                    )
                ],
                "reqps",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Rows predicted by model and role",
                "Rows per second each model predicted: served (answered the client), member (ran for "
                "the served variant) or shadow.",
                [
                    target(
                        'sum by (model, role) (rate(gateway_predictions_total{model=~"$model"}'
                        "[$__rate_interval]))",
                        "{{model}} {{role}}",
                    )
                ],
                "short",
            ),
        ),
        (
            12,
            9,
            timeseries(
                "Request latency by variant (p50 / p95 / p99)",
                "Time to answer a prediction request, by the variant that answered (the alert SLO is "
                "p99 < 50 ms).",
                quantiles("gateway_request_seconds", "variant", 'variant=~"$model"'),
                "s",
            ),
        ),
        (
            12,
            9,
            timeseries(
                "ONNX inference latency by model (p50 / p95 / p99)",
                "onnxruntime run time of one member for one batch.",
                quantiles("gateway_model_inference_seconds", "model", 'model=~"$model"'),
                "s",
            ),
        ),
        (
            12,
            9,
            timeseries(
                "Live accuracy over $window vs offline test accuracy",
                "Solid: share of labelled rows each model and combiner got right, over the window "
                "(labels join predictions through POST /feedback). Dashed: accuracy on the offline "
                "test split from the model card. Only models with labelled rows in the window show a "
                "live line.",
                [
                    target(
                        'sum by (model) (increase(gateway_feedback_total{model=~"$model", outcome="correct"}'
                        "[$window]))\n/ (sum by (model) (increase(gateway_feedback_total"
                        '{model=~"$model"}[$window])) > 0)',
                        "{{model}} live",
                    ),
                    target(
                        'max by (model) (gateway_offline_score{model=~"$model", metric="accuracy"})',
                        "{{model}} offline",
                        ref="B",
                    ),
                ],
                "percentunit",
                minimum=None,
                maximum=1,
                overrides=[dashed("B")],
            ),
        ),
        (
            12,
            9,
            timeseries(
                "Disagreement with the served answer",
                "Share of compared rows on which a model's label differs from the label served to the "
                "client (members and shadows of the same request).",
                [
                    target(
                        'sum by (model) (rate(gateway_disagreement_total{model=~"$model"}[$__rate_interval]))'
                        '\n/ (sum by (model) (rate(gateway_compared_rows_total{model=~"$model"}'
                        "[$__rate_interval])) > 0)",
                        "{{model}}",
                    )
                ],
                "percentunit",
                maximum=1,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Label coverage over $window",
                "Labels joined / rows served. Labels arrive late; in a steady state the ratio of the "
                "two rates is the labelled share of traffic. Below 10% live accuracy cannot be judged.",
                [
                    target(
                        'sum(rate(gateway_labels_total{outcome="joined"}[$window]))'
                        "\n/ (sum(rate(gateway_served_rows_total[$window])) > 0)",
                        "coverage",
                    )
                ],
                "percentunit",
                maximum=1,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Labels received by outcome",
                "Labels posted to /feedback per second: joined, unknown_id (no such prediction), "
                "duplicate, conflicting (first label kept), invalid_label.",
                [
                    target(
                        "sum by (outcome) (rate(gateway_labels_total[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                "short",
                stack=True,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Label delay (p50 / p95) over $window",
                "Time from a prediction to its label.",
                [
                    target(
                        f"histogram_quantile({q}, sum by (le) (rate(gateway_label_delay_seconds_bucket"
                        "[$window])))",
                        f"p{round(q * 100)}",
                        ref=ref,
                    )
                    for ref, q in (("A", 0.5), ("B", 0.95))
                ],
                "s",
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Rejected requests by reason",
                "Requests refused with a 4xx or 503, per second, by reason (internal errors: next panel).",
                [
                    target(
                        'sum by (reason) (rate(gateway_rejected_requests_total{reason!="internal_error"}'
                        "[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
                "reqps",
                stack=True,
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Internal errors (500)",
                "Requests that ended in a 500, per second and as a share of all answered or refused "
                "requests (successful /feedback, /compare and /models calls are not counted).",
                [
                    target(
                        'sum(rate(gateway_rejected_requests_total{reason="internal_error"}[$__rate_interval]))',
                        "errors/s",
                    ),
                    target(
                        'sum(rate(gateway_rejected_requests_total{reason="internal_error"}[$__rate_interval]))'
                        f"\n/ ({REQUESTS} > 0)",
                        "error ratio",
                        ref="B",
                    ),
                ],
                "reqps",
                overrides=[
                    {
                        "matcher": {"id": "byFrameRefID", "options": "B"},
                        "properties": [{"id": "unit", "value": "percentunit"}],
                    }
                ],
            ),
        ),
        (
            8,
            8,
            timeseries(
                "Dropped background work",
                "Shadow evaluations and ledger writes dropped per second instead of delaying answers.",
                [
                    target(
                        "sum by (reason) (rate(gateway_dropped_work_total[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
                "short",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Connections closed by the gateway",
                "Per second: connections whose request headers did not arrive within "
                "GATEWAY_HEADER_TIMEOUT_S (header_timeout), and requests refused with 503 because a worker "
                "held GATEWAY_MAX_CONNECTIONS (over_limit).",
                [
                    target(
                        "sum by (reason) (rate(gateway_connections_closed_total[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
                "short",
                stack=True,
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Online calibration (as of the last /compare)",
                "Brier score and expected calibration error of each model on its labelled rows, set each "
                "time /compare is read (gateway compare, the /ui page); lower is better. Offline values are "
                "in /compare beside them.",
                [
                    target(
                        'max by (model, metric) (gateway_online_calibration{model=~"$model",metric=~"brier|ece"})',
                        "{{model}} {{metric}}",
                    )
                ],
                "short",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Online precision and recall (binary and anomaly tasks, as of the last /compare)",
                "Precision and recall of class 1 (the anomaly, for detectors) of each model on its labelled "
                "rows, set each time /compare is read; /compare has their 95% Wilson intervals "
                '(gateway_online_detection{metric=~".*_low|.*_high"}) and the paired recall tests.',
                [
                    target(
                        'max by (model, metric) (gateway_online_detection{model=~"$model",metric=~"precision|recall"})',
                        "{{model}} {{metric}}",
                    )
                ],
                "percentunit",
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Input drift (PSI) per column",
                "Population stability index of each input column's live rows in the /drift window (1 h by "
                "default) against the training data's reference, the worst replica; dashed: the moderate "
                "(0.1) and drifted (0.25) lines. GatewayInputDrift fires above 0.25 for 15 minutes with at "
                "least 200 live rows. GET /drift has the bin shares and tests.",
                [
                    target("max by (column) (gateway_input_drift_psi)", "{{column}}"),
                    target("vector(0.1)", "moderate", ref="B"),
                    target("vector(0.25)", "drifted", ref="C"),
                ],
                "short",
                overrides=[dashed("B"), dashed("C")],
            ),
        ),
        (
            12,
            8,
            timeseries(
                "Input drift tests (p-value) and live rows",
                "p-value of each column's two-sample test against the reference (binned KS for numeric "
                "columns, chi-square for categorical ones; the smallest over replicas), and the live rows "
                "in the /drift window (right axis).",
                [
                    target("min by (column) (gateway_input_drift_p_value)", "{{column}}"),
                    target("max(gateway_input_drift_rows)", "live rows", ref="B"),
                ],
                "short",
                maximum=None,
                overrides=[
                    {
                        "matcher": {"id": "byFrameRefID", "options": "B"},
                        "properties": [
                            {"id": "custom.axisPlacement", "value": "right"},
                            {"id": "custom.drawStyle", "value": "bars"},
                        ],
                    }
                ],
            ),
        ),
    ]


def layout(items: list[tuple[int, int, Panel]]) -> list[Panel]:
    """Place panels left to right, wrapping at Grafana's 24 columns; ids in reading order."""
    out: list[Panel] = []
    x = y = row_height = 0
    for i, (w, h, panel) in enumerate(items, start=1):
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append({"id": i, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel})
        x += w
        row_height = max(row_height, h)
    return out


def templating() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "model",
            "label": "Model",
            "type": "query",
            "datasource": DS,
            "definition": "label_values(gateway_model_info, model)",
            "query": {
                "qryType": 1,
                "query": "label_values(gateway_model_info, model)",
                "metric": "gateway_model_info",
                "label": "model",
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            },
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
        },
        {
            "name": "window",
            "label": "Accuracy window",
            "description": "Window of the live accuracy, label coverage and label delay panels.",
            "type": "interval",
            "query": "15m,1h,6h,1d,7d",
            "current": {"selected": True, "text": "1h", "value": "1h"},
            "options": [
                {"selected": v == "1h", "text": v, "value": v} for v in ("15m", "1h", "6h", "1d", "7d")
            ],
            "auto": False,
            "hide": 0,
            "refresh": 2,
        },
    ]


def dashboard() -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "Ensemble gateway: traffic, latency, live vs offline accuracy, labels, rejections.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout(panels()),
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["ensemble-gateway", "model-serving"],
        "templating": {"list": templating()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "Ensemble gateway",
        "uid": UID,
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    """The dashboard JSON exactly as checked in."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON on disk is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python monitoring/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
