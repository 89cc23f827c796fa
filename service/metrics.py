"""Every Prometheus metric of the gateway, defined here and only here.

Labels are bounded: ``model`` and ``variant`` come from the manifest, ``role``, ``outcome`` and
``reason`` from fixed sets; request ids and paths never become labels. With several workers
(``bentoml serve`` sets PROMETHEUS_MULTIPROC_DIR), values live in per-process files and /metrics
aggregates them with the multiprocess collector.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MODEL = "model"
VARIANT = "variant"
ROLE = "role"
OUTCOME = "outcome"
REASON = "reason"
PROTOCOL = "protocol"

ROLES = ("served", "shadow", "member")
ROUTES = (
    "predict",
    "feedback",
    "compare",
    "models",
    "metrics",
    "admin",
    "oip_infer",
    "oip_metadata",
    "oip_health",
    "drift",
)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
FEEDBACK_OUTCOMES = ("joined", "unknown_id", "duplicate", "conflicting", "invalid_label")
CORRECTNESS = ("correct", "incorrect")
REJECT_REASONS = (
    "invalid_body",
    "invalid_field",
    "unknown_variant",
    "payload_too_large",
    "body_timeout",
    "not_found",
    "unauthorized",
    "admin_disabled",
    "conflict",
    "unsupported_media_type",
    "not_ready",
    "ledger_unavailable",
    "internal_error",
)
DROP_REASONS = (
    "shadow_queue_full",
    "shadow_timeout",
    "shadow_failed",
    "ledger_queue_full",
    "evaluator_lost",
    "ledger_full",
    "ledger_read_only",
    "ledger_locked",
    "ledger_io_error",
    "ledger_unreachable",
    "ledger_error",
    "worker_crashed",
)
CONNECTION_CLOSE_REASONS = ("header_timeout", "over_limit")
UNRECORDED_REASONS = (*DROP_REASONS[3:], "duplicate_id")
"""Reasons an answered row is not in the ledger (shadow_* reasons drop shadow work, never the answer;
a request id answered twice keeps its first record)."""

# ONNX runs of these models take tens of microseconds: the client's default buckets start at 5 ms.
INFERENCE_BUCKETS = (
    1e-5,
    2.5e-5,
    5e-5,
    7.5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    7.5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.5,
    1.0,
)
REQUEST_BUCKETS = (
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    7.5e-4,
    1e-3,
    1.5e-3,
    2e-3,
    3e-3,
    5e-3,
    7.5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
DELAY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400)

REGISTRY = CollectorRegistry(auto_describe=True)

INFERENCE_SECONDS = Histogram(
    "gateway_model_inference_seconds",
    "onnxruntime run time of one member for one batch",
    [MODEL],
    buckets=INFERENCE_BUCKETS,
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "gateway_request_seconds",
    "Time to answer a prediction request, by the variant that answered",
    [VARIANT, PROTOCOL],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
PREDICTIONS = Counter(
    "gateway_predictions",
    "Rows predicted, by model (member or combiner) and role",
    [MODEL, ROLE],
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "gateway_feedback",
    "Labelled rows scored per model and combiner (classification)",
    [MODEL, OUTCOME],
    registry=REGISTRY,
)
ABS_ERROR = Counter(
    "gateway_feedback_abs_error",
    "Sum of absolute errors on labelled rows (regression)",
    [MODEL],
    registry=REGISTRY,
)
SQUARED_ERROR = Counter(
    "gateway_feedback_squared_error",
    "Sum of squared errors on labelled rows (regression)",
    [MODEL],
    registry=REGISTRY,
)
SCORED = Counter(
    "gateway_feedback_scored",
    "Labelled rows scored per model and combiner (any task)",
    [MODEL],
    registry=REGISTRY,
)
LABELS = Counter(
    "gateway_labels",
    "Labels received on /feedback, by outcome",
    [OUTCOME],
    registry=REGISTRY,
)
LABEL_DELAY = Histogram(
    "gateway_label_delay_seconds",
    "Time from prediction to its label",
    buckets=DELAY_BUCKETS,
    registry=REGISTRY,
)
SERVED_ROWS = Counter(
    "gateway_served_rows",
    "Rows answered to clients (the denominator of label coverage)",
    registry=REGISTRY,
)
DISAGREEMENT = Counter(
    "gateway_disagreement",
    "Rows on which a model's label differs from the served answer",
    [MODEL],
    registry=REGISTRY,
)
COMPARED = Counter(
    "gateway_compared_rows",
    "Rows on which a model's label was compared with the served answer",
    [MODEL],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "gateway_http_requests",
    "Responses of the gateway's own routes, by route and status class",
    ["route", "status_class"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "gateway_rejected_requests",
    "Requests refused, by reason",
    [REASON],
    registry=REGISTRY,
)
DROPPED = Counter(
    "gateway_dropped_work",
    "Background work dropped instead of delaying requests",
    [REASON],
    registry=REGISTRY,
)
UNRECORDED_ROWS = Counter(
    "gateway_unrecorded_rows",
    "Answered rows that are not in the ledger, by reason (the ledger is a system of record: answered rows "
    "= ledger rows + these)",
    [REASON],
    registry=REGISTRY,
)
CONNECTIONS_CLOSED = Counter(
    "gateway_connections_closed",
    "Connections the gateway closed itself: headers not complete within GATEWAY_HEADER_TIMEOUT_S, or a "
    "request refused with 503 while the worker held GATEWAY_MAX_CONNECTIONS",
    [REASON],
    registry=REGISTRY,
)
LEDGER_DEGRADED = Gauge(
    "gateway_ledger_degraded",
    "1 while ledger writes are failing and being retried (see /health for the reason)",
    registry=REGISTRY,
    multiprocess_mode="max",
)
LEDGER_PENDING_ROWS = Gauge(
    "gateway_ledger_pending_rows",
    "Rows waiting to be written to the ledger (queued or retried)",
    registry=REGISTRY,
    multiprocess_mode="sum",
)
LEDGER_REOPENED = Counter(
    "gateway_ledger_reopened",
    "Times a ledger file was found deleted or replaced while open and reopened",
    registry=REGISTRY,
)
OFFLINE_SCORE = Gauge(
    "gateway_offline_score",
    "Offline test-split score from the model card",
    [MODEL, "metric"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
MODEL_INFO = Gauge(
    "gateway_model_info",
    "Loaded models: 1 per model with its version, family and kind",
    [MODEL, "version", "family", "kind", "repository"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
ONLINE_CALIBRATION = Gauge(
    "gateway_online_calibration",
    "Online calibration of each model on its labelled rows, as of the last /compare: metric is brier, ece "
    "or log_loss (binary tasks)",
    [MODEL, "metric"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
ONLINE_DETECTION = Gauge(
    "gateway_online_detection",
    "Binary tasks (detectors: class 1 is the anomaly), as of the last /compare: each model's precision "
    "and recall of class 1 on its labelled rows with their 95% Wilson bounds (precision_low, "
    "precision_high, recall_low, recall_high) and the average precision of its score",
    [MODEL, "metric"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
INPUT_DRIFT_PSI = Gauge(
    "gateway_input_drift_psi",
    "Population stability index of each input column's live rows (the /drift window) against the "
    "training data's reference, as of the last refresh",
    ["column"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
INPUT_DRIFT_P_VALUE = Gauge(
    "gateway_input_drift_p_value",
    "p-value of the drift test of each input column (KS for numeric, chi-square for categorical)",
    ["column"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
INPUT_DRIFT_ROWS = Gauge(
    "gateway_input_drift_rows",
    "Live rows in the /drift window, every worker and replica writing to the ledger",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
INPUT_ROWS_UNCOUNTED = Counter(
    "gateway_input_rows_uncounted",
    "Answered rows left out of the live input counts: their minute's counts could not be written to "
    "the ledger for a day (the oldest pending minutes are dropped beyond that)",
    registry=REGISTRY,
)
PATCH_APPLIED = Gauge(
    "gateway_patch_applied",
    "1 for each patch of a dependency's private code that applied at start, 0 for one that did not",
    ["patch"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
ROUTING_ROLE = Gauge(
    "gateway_routing_role",
    "1 for each model's current routing role (champion, challenger, shadow)",
    [MODEL, ROLE],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)


def precreate(models: Iterable[str], timed: Iterable[str] | None = None) -> None:
    """Create every labelled series at 0 for the loaded models, so dashboards see them at once;
    inference latency only for what runs an ONNX graph (members and the stacking meta-model)."""
    models = list(models)
    for m in models if timed is None else timed:
        INFERENCE_SECONDS.labels(m)
    for m in models:
        for role in ROLES:
            PREDICTIONS.labels(m, role)
        for outcome in CORRECTNESS:
            FEEDBACK.labels(m, outcome)
        ABS_ERROR.labels(m)
        SQUARED_ERROR.labels(m)
        SCORED.labels(m)
        DISAGREEMENT.labels(m)
        COMPARED.labels(m)
    for outcome in FEEDBACK_OUTCOMES:
        LABELS.labels(outcome)
    for route in ROUTES:
        for cls in STATUS_CLASSES:
            HTTP_REQUESTS.labels(route, cls)
    for reason in REJECT_REASONS:
        REJECTED.labels(reason)
    for reason in DROP_REASONS:
        DROPPED.labels(reason)
    for reason in UNRECORDED_REASONS:
        UNRECORDED_ROWS.labels(reason)
    for reason in CONNECTION_CLOSE_REASONS:
        CONNECTIONS_CLOSED.labels(reason)


def exposition() -> tuple[bytes, str]:
    """The /metrics body: this process's registry, or every worker's when running multiprocess (the
    caller flushes queued updates first: service.metric_queue.flush)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
