"""Every setting of the gateway, in one typed object read from GATEWAY_* environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GATEWAY_"


class Settings(BaseSettings):
    """Gateway settings; tests build these directly instead of patching the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    repository: Path = Path("models")
    """A repository root, a model folder or one version folder; the newest version is served."""
    ledger_path: Path = Path(".gateway/ledger.sqlite")
    """SQLite file of the prediction ledger (when ledger_url is not set)."""
    ledger_url: str | None = None
    """The ledger's database: ``sqlite:///path`` or ``postgresql://user@host:port/db`` (one database
    shared by every replica, service/ledger/database.py); unset, the SQLite file ledger_path."""
    ledger_enabled: bool = True
    """Record every prediction (off only to measure what recording costs)."""
    ledger_flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.1
    """Predictions are committed at least this often; a kill -9 loses at most this window. Short
    intervals also keep fewer pending records alive between writes, which keeps garbage-collector
    pauses short (measured max latency 64 ms at 0.5 s, 19 ms at 0.1 s, same throughput)."""
    ledger_retention_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    """Unlabelled predictions older than this are deleted."""
    ledger_max_unlabelled_rows: Annotated[int, Field(ge=1000)] = 5_000_000
    """Cap on unlabelled prediction rows; the oldest beyond it are deleted."""
    ledger_cleanup_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """How often the writer applies retention and the row cap (each run is one indexed delete)."""
    ledger_retry_rows: Annotated[int, Field(ge=0)] = 200_000
    """Rows kept in memory for another try while ledger writes fail (disk full, read-only, locked, I/O
    error); beyond it the oldest are counted in gateway_unrecorded_rows_total with the failure's reason."""
    ledger_max_bytes: Annotated[int, Field(ge=4096)] | None = None
    """A cap on the SQLite ledger file (SQLite's max_page_count); writes beyond it fail as on a full
    disk, are retried and counted. None: no cap."""
    journal_dir: Path | None = None
    """Where each worker keeps its crash journal (rows answered vs rows committed or counted, in a small
    memory-mapped file that survives kill -9); default: beside the ledger file."""
    record_queue: Annotated[int, Field(ge=1)] = 100_000
    """Answered requests waiting to be recorded (to be shipped to the evaluator process, or in the
    ledger writer's queue); beyond it a record is dropped and counted, never waited for."""
    feedback_max_labels: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Largest number of labels in one /feedback request."""
    feedback_retry_step_s: Annotated[float, Field(gt=0, le=1)] = 0.1
    """How often a label whose prediction is not written yet is looked up again (see below)."""
    feedback_retry_s: Annotated[float, Field(ge=0, le=10)] = 1.0
    """A label whose prediction is not in the ledger yet is looked up again (every 0.1 s) for this
    long before it is answered unknown_id: with several workers, another worker may have answered it
    and not written it yet (its gather window plus its flush interval, longer under load). Only
    unknown ids wait; 0 answers at once."""
    admin_token: SecretStr | None = None
    """Bearer token for /admin/*; without it the admin API answers 403. A blank token is refused
    (it would open the admin API to anyone who sends an empty bearer)."""
    max_batch_rows: Annotated[int, Field(ge=1, le=100_000)] = 1024
    """Largest number of records (or OIP rows) in one request."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    """Largest request body accepted."""
    shadow_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    """Overrides the manifest's shadow fraction when set."""
    shadow_queue: Annotated[int, Field(ge=1)] = 1024
    """Bounded queue of pending shadow evaluations; beyond it shadow work is dropped and counted."""
    shadow_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    """Shadow work older than this when its turn comes is dropped and counted."""
    shadow_max_batch: Annotated[int, Field(ge=1)] = 256
    """Most answered requests finished together on the shadow thread (threads only)."""
    shadow_gather_s: Annotated[float, Field(ge=0, le=1)] = 0.05
    """How long the shadow worker lets requests queue up before one batch: longer means fewer, larger
    onnxruntime runs (cheaper per request) and later shadow records."""
    drift_enabled: bool = True
    """Count every answered row into the input reference's bins (service/drift) for /drift; off only to
    measure what it costs."""
    drift_flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """How often each worker writes its live input counts to the ledger (/drift is this far behind for
    the other workers; the worker answering /drift writes its own first)."""
    drift_publish_interval_s: Annotated[float, Field(gt=0)] = 30.0
    """How often each worker refreshes the drift gauges from the ledger (also at every /drift)."""
    drift_window_s: Annotated[float, Field(ge=60)] = 3600.0
    """The default window of /drift: live rows of the last this many seconds (minute buckets)."""
    drift_min_rows: Annotated[int, Field(ge=1)] = 200
    """Live rows a column needs in the window before it gets a drift status (PSI is biased up on few)."""
    promote: bool = False
    """Promote a challenger the always-valid test calls better than the champion, on /compare
    (service/core/promotion.py); off by default: a champion changes only when you say so."""
    promote_min_labels: Annotated[int, Field(ge=1)] = 1000
    """Paired labelled rows (challenger and champion on the same rows) a promotion needs at least."""
    promote_max_latency_ratio: Annotated[float, Field(gt=0)] = 1.5
    """A promoted challenger's single-row latency (from its card) is at most this times the champion's."""
    decision_sync_s: Annotated[float, Field(gt=0)] = 5.0
    """How often each worker applies routing decisions that other workers or replicas wrote."""
    estimate_max_rows: Annotated[int, Field(ge=0, le=1_000_000)] = 20_000
    """/compare estimates each classifier's accuracy on at most this many of the most recent rows that
    have no label yet (0: no estimates); reading them costs /compare about 80 ms per 20k rows of 9 variants
    (SQLite, measured)."""
    drift_max_series: Annotated[int, Field(ge=0, le=10_000)] = 200
    """Columns (manifest order) published as Prometheus series; the rest are on /drift only."""
    evaluator_restart_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    """An evaluator process that died is started again at most this often (what it never confirmed
    is counted as evaluator_lost; meanwhile answers go on and their records are counted lost)."""
    evaluator_batch_messages: Annotated[int, Field(ge=1)] = 16
    """Messages already waiting that the evaluator finishes together (each is one gather window)."""
    evaluator_keep_versions: Annotated[int, Field(ge=1)] = 2
    """Versions the evaluator keeps loaded: the serving one and the previous one (jobs queued before
    a reload still find their graphs)."""
    evaluator_process: bool = True
    """Shadow variants and ledger writes run in an evaluator process beside each worker, with its own
    interpreter lock (service/offload.py); false runs them on threads of the worker (an in-process
    recorder needs that, see Gateway.recorder)."""
    providers: list[str] = ["CPUExecutionProvider"]
    """onnxruntime execution providers, in order; an unavailable one is a load error."""
    gc_thresholds: tuple[int, int, int] = (20_000, 50, 100)
    """Garbage-collector thresholds set after the heap is frozen at load (service/tuning.py): young
    collections every 20k allocations instead of 700, since request garbage is short-lived."""
    intra_op_threads: Annotated[int, Field(ge=0, le=64)] = 1
    """onnxruntime threads per session (1: single rows are fastest without thread hand-offs)."""
    metrics_flush_interval_s: Annotated[float, Field(gt=0, le=10)] = 0.25
    """How often queued hot-path metric updates reach the (multiprocess) values; /metrics of a worker
    flushes first, so a scrape never misses an update made before it in the same worker."""
    body_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """A request body must arrive whole within this long after its headers (408 otherwise): half-sent
    uploads cannot hold connections indefinitely."""
    header_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """A request's headers must arrive whole within this long of the connection opening or the previous
    response (the connection is closed, with a 408 if part of a request came): half-sent requests
    cannot hold connections (service/connections.py)."""
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    """Open connections per worker beyond which a request is answered 503 ``overloaded`` with
    Retry-After (kept below the open-file limit, which is raised to its hard limit)."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """BentoML's per-request timeout for the routes it serves (the hot routes are bounded by body size
    and rows per request instead)."""

    @field_validator("ledger_url")
    @classmethod
    def _ledger_url_form(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("expected sqlite:///<path> or postgresql://<user>@<host>:<port>/<database>")
        return value

    @property
    def ledger_target(self) -> str:
        """The ledger's URL (ledger_url, else the SQLite file ledger_path)."""
        return self.ledger_url or f"sqlite:///{self.ledger_path}"

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("blank: set a token, or unset GATEWAY_ADMIN_TOKEN to keep the admin API closed")
        return value


def environment(**values: object) -> dict[str, str]:
    """GATEWAY_* variables that give a child process these settings (field names, checked); values
    are validated as Settings would validate them."""
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"unknown settings: {unknown}")
    Settings.model_validate(values)
    out = {}
    for name, value in values.items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list | tuple):
            value = json.dumps(list(value))
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[ENV_PREFIX + name.upper()] = str(value)
    return out
