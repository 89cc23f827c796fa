"""The request core shared by every transport (JSON API and Open Inference Protocol).

One request: validate (service/core/requests.py) -> route -> run each needed member once -> the served
variant's answer -> respond; the answered request goes to a Recording (service/recording/protocol.py),
which runs the shadow variants (and the members only they need) afterwards from the same feeds, so
every variant is scored on identical traffic, and writes the ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from contract.manifest import Manifest, ModelCard, Routing
from contract.outputs import Output
from service import metric_queue, metrics
from service.core.answers import describe_repository, rows_json
from service.core.promotion import Promoter
from service.core.publish import publish_models, publish_routing
from service.core.requests import PredictRequest, parse_predict
from service.core.routing import Router
from service.core.versions import earlier_version, side_by_side
from service.drift.live import LiveInputs
from service.errors import InvalidField, LedgerUnavailable, NotReady, UnknownVariant
from service.ledger.database import Database, database_errors, failure_reason
from service.ledger.feedback import FeedbackStore
from service.ledger.reads import LabelledRows, served_rows, unlabelled_answers
from service.metric_queue import Series
from service.recording.jobs import Job, Recorder
from service.recording.protocol import Recording, open_recording
from service.runtime.repository import LoadedRepository, load
from service.settings import Settings
from service.stats.compare import compare

log = logging.getLogger(__name__)
ALIASES = ("champion",)


def check_finite(outputs: Mapping[str, Output]) -> None:
    """Answers with NaN or infinite scores are refused before anything is answered or recorded: a
    value far outside the training data overflows inside a graph (float32), and a non-finite
    probability is no answer."""
    for variant, out in outputs.items():
        for arr in (out.proba, out.values):
            if arr is not None and not np.isfinite(arr).all():
                bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
                raise InvalidField(
                    f"records[{int(bad[0])}]",
                    "values the models can score (within the range of the training data)",
                    f"a non-finite score from {variant} ({len(bad)} row(s))",
                )


DETECTION_GAUGES = (
    "precision",
    "precision_low",
    "precision_high",
    "recall",
    "recall_low",
    "recall_high",
    "average_precision",
)


class Gateway:
    """Holds the loaded repository and routing; swaps both atomically on reload."""

    def __init__(self, settings: Settings, recorder: Recorder | None = None) -> None:
        self.settings = settings
        metric_queue.set_flush_interval(settings.metrics_flush_interval_s)
        self._lock = threading.Lock()
        self._repo: LoadedRepository | None = None
        self._router: Router | None = None
        self.series = Series([])
        self.recording: Recording = open_recording(settings, lambda: self.series, recorder)
        """Where answered requests go (threads or the evaluator process); the gateway never asks which."""
        self._feedback: FeedbackStore | None = None
        self._feedback_lock = threading.Lock()
        self._compare_lock = threading.Lock()
        self._labelled: LabelledRows | None = None
        self._reopened_seen = 0
        self.inputs = LiveInputs(settings)
        """Every answered row's inputs, counted against the reference for /drift."""
        self.promoter = Promoter(settings, lambda: (self.repo, self.router), self.set_routing)
        """Routing decisions: promotion on /compare, rollback, and following other workers'."""

    # --- loading -------------------------------------------------------------------------------
    def load(self, path: Path | None = None) -> LoadedRepository:
        """Load and verify a repository, then swap it in (with its manifest routing) in one step."""
        s = self.settings
        repo = load(path or s.repository, s.providers, s.intra_op_threads)
        router = Router.from_routing(repo.manifest.routing, repo.variants, s.shadow_fraction)
        series = Series(repo.variants, repo.timed)
        repo.timers = series.inference
        if not self.recording.prepare(repo):
            # Serving goes on; the evaluator loads the version with its first jobs (or is restarted).
            log.error("the evaluator process did not load %s in time", repo.path)
        with self._lock:
            old = self._repo
            self._repo, self._router, self.series = repo, router, series
        self.inputs.attach(repo)
        publish_models(repo, old)
        publish_routing(router, repo)
        try:  # a champion promoted earlier for this version stays promoted after a restart
            self.promoter.sync()
        except database_errors() as exc:
            log.warning("routing decisions not read at load (%s: %s)", failure_reason(exc), exc)
        self.promoter.start()
        return repo

    @property
    def ready(self) -> bool:
        return self._repo is not None

    @property
    def repo(self) -> LoadedRepository:
        repo = self._repo
        if repo is None:
            raise NotReady("repository not loaded")
        return repo

    @property
    def router(self) -> Router:
        router = self._router
        if router is None:
            raise NotReady("repository not loaded")
        return router

    def set_routing(self, routing: Routing) -> Router:
        """Replace the routing table (validated against the loaded variants)."""
        with self._lock:
            router = Router.from_routing(routing, self.repo.variants)
            self._router = router
        publish_routing(router, self.repo)
        return router

    # --- answering -----------------------------------------------------------------------------
    def predict_json(self, body: Mapping[str, Any], header_id: str | None) -> tuple[dict[str, Any], Job]:
        """The JSON API: parse, answer, and the response document."""
        repo, router = self.repo, self.router  # one snapshot for the whole request
        request = parse_predict(body, repo.manifest, self.settings.max_batch_rows, header_id)
        job = self.answer(repo, router, request)
        out: dict[str, Any] = {
            "request_id": job.request_id,
            "model": repo.manifest.name,
            "version": repo.manifest.version,
            "variant": job.variant,
            "role": job.role,
            "predictions": rows_json(repo.manifest, job.output),
        }
        if request.return_members:
            out["members"] = {name: rows_json(repo.manifest, o) for name, o in job.members.items()}
        return out, job

    def resolve_variant(self, repo: LoadedRepository, router: Router, name: str) -> str:
        """A forced variant name; "champion" means the current champion."""
        if name == "champion":
            return router.champion
        if name not in repo.variants:
            raise UnknownVariant(name, [*repo.variants, *ALIASES])
        return name

    def answer(self, repo: LoadedRepository, router: Router, request: PredictRequest) -> Job:
        """Route, run the needed members once, answer, and hand the rest to the recording."""
        if request.variant is not None:
            name, role = self.resolve_variant(repo, router, request.variant), "forced"
        else:
            name, role = router.assign(request.routing_key or request.request_id)
        shadow = router.shadow_for(request.request_id, name)
        needed = (
            [m.name for m in repo.manifest.members] if request.return_members else repo.members_for([name])
        )
        outputs = repo.run_members(request.feeds, needed)
        served = repo.evaluate(name, outputs)
        check_finite({name: served, **(outputs if request.return_members else {})})
        rows = request.rows
        self.inputs.observe(request.feeds, rows)
        job = Job(
            request_id=request.request_id,
            variant=name,
            role=role,
            rows=rows,
            output=served,
            members=outputs,
            repository=str(repo.path),
            model=repo.manifest.name,
            version=repo.manifest.version,
            feeds=request.feeds if shadow else {},
            shadow=tuple(shadow),
            deadline=time.monotonic() + self.settings.shadow_timeout_s,
        )
        series = self.series
        series.predictions[(name, "served")].inc(rows)
        for m in outputs:
            if m != name:
                series.predictions[(m, "member")].inc(rows)
        series.served_rows.inc(rows)
        self.recording.submit(job)
        return job

    # --- live evaluation -----------------------------------------------------------------------
    def feedback(self, body: Any) -> dict[str, Any]:
        """POST /feedback (blocking: call from a worker thread)."""
        if not self.settings.ledger_enabled:
            raise NotReady("the ledger is disabled (GATEWAY_LEDGER_ENABLED=false): labels cannot be joined")
        repo = self.repo
        with self._feedback_lock:
            if self._feedback is None:
                # Requests answered before a label may still be on their way to the ledger: the store
                # waits for them (the recording's barrier) before it joins.
                self._feedback = FeedbackStore(self.settings, self.recording.barrier)
            store = self._feedback
        return store.submit(repo.manifest, body).as_json()

    def compare(self, against: Any = None) -> dict[str, Any]:
        """GET /compare[?against=N] (blocking: call from a worker thread)."""
        if not self.settings.ledger_enabled:
            raise NotReady("the ledger is disabled (GATEWAY_LEDGER_ENABLED=false): nothing to compare")
        repo, router = self.repo, self.router
        earlier = earlier_version(repo, against) if against is not None else None
        self.recording.barrier()
        m = repo.manifest
        errors = database_errors()
        try:
            conn = Database(self.settings.ledger_target)
        except errors as exc:
            raise LedgerUnavailable(
                f"ledger: cannot be read now ({failure_reason(exc)}: {exc}); try again later"
            ) from exc
        try:
            with self._compare_lock:  # the labelled rows read so far are shared by every call
                labelled = self._labelled = LabelledRows.for_version(self._labelled, m)
                data = labelled.update(conn)
                served, labelled_rows = served_rows(conn, m.name, m.version), labelled.rows
                calibration = labelled.calibration()
            unlabelled_rows, unlabelled = (
                unlabelled_answers(conn, m.name, m.version, self.settings.estimate_max_rows)
                if m.task != "regression" and self.settings.estimate_max_rows
                else (0, None)
            )
            if earlier is not None:
                then = _compare_version(conn, *earlier)
        except errors as exc:
            raise LedgerUnavailable(
                f"ledger: cannot be read now ({failure_reason(exc)}: {exc}); try again later"
            ) from exc
        finally:
            conn.close()
        doc = compare(
            m,
            repo.cards,
            data,
            champion=router.champion,
            others=[n for n in repo.variants if n != router.champion],
            served_rows=served,
            labelled_rows=labelled_rows,
            calibration=calibration,
            unlabelled=unlabelled,
        )
        if unlabelled is not None:
            doc["estimates"] = {
                "unlabelled_rows": unlabelled_rows,
                "max_rows": self.settings.estimate_max_rows,
                "method": "confidence-based performance estimation: each card's isotonic map from the "
                "served label's confidence to P(right), fitted on the validation split",
            }
        for row in doc["models"]:
            for name in ("brier", "ece", "log_loss"):
                value = (row.get("calibration") or {}).get(name)
                if value is not None:
                    metrics.ONLINE_CALIBRATION.labels(row["model"], name).set(value)
            detection = row.get("detection") or {}
            for name in DETECTION_GAUGES:
                if detection.get(name) is not None:
                    metrics.ONLINE_DETECTION.labels(row["model"], name).set(detection[name])
        if earlier is not None:
            doc["against"] = side_by_side(doc, then)
        doc["promotion"] = self.promoter.consider(doc, repo.cards)
        return doc

    def drift(self, window: Any = None) -> dict[str, Any]:
        """GET /drift[?window=SECONDS] (blocking: call from a worker thread)."""
        s = self.settings
        if not s.ledger_enabled or not s.drift_enabled:
            raise NotReady(
                "input drift needs the ledger and GATEWAY_DRIFT_ENABLED (one is off): nothing is counted"
            )
        self.repo  # noqa: B018 - NotReady before a repository is loaded
        window_s = _window(window, s.ledger_retention_s)
        try:
            return self.inputs.document(window_s)
        except database_errors() as exc:
            raise LedgerUnavailable(
                f"ledger: cannot be read now ({failure_reason(exc)}: {exc}); try again later"
            ) from exc

    def health(self) -> dict[str, Any]:
        """GET /health: readiness, the recording and the ledger (degraded while writes fail), and which
        dependency patches applied. Also refreshes the ledger gauges."""
        recording = self.recording.health()
        ledger = recording.get("ledger")
        degraded = isinstance(ledger, dict) and ledger.get("state") != "ok"
        metrics.LEDGER_DEGRADED.set(1 if degraded else 0)
        if isinstance(ledger, dict):
            metrics.LEDGER_PENDING_ROWS.set(float(ledger.get("pending_rows") or 0))
            reopened = int(ledger.get("reopened") or 0)
            if reopened < self._reopened_seen:  # a new writer (the evaluator was restarted) counts from 0
                self._reopened_seen = 0
            if reopened > self._reopened_seen:  # the writer counts; the counter follows at each look
                metrics.LEDGER_REOPENED.inc(reopened - self._reopened_seen)
                self._reopened_seen = reopened
        return {
            "ready": self.ready,
            "status": "degraded" if degraded else "ok",
            "ledger_enabled": self.settings.ledger_enabled,
            **recording,
        }

    def models_json(self) -> dict[str, Any]:
        """GET /models."""
        return describe_repository(self.repo, self.router.as_routing())

    def close(self) -> None:
        """Finish shadow work, then flush the ledger (graceful stop: nothing acknowledged is lost)."""
        self.promoter.close()
        self.recording.close()
        self.inputs.close()
        if self._feedback is not None:
            self._feedback.close()
        metric_queue.flush()


def _window(value: Any, most: float) -> float | None:
    """The ``window`` query parameter: seconds, at least one minute, at most the retention."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (60 <= seconds <= most):
        raise InvalidField("window", f"seconds from 60 to the ledger retention ({most:g})", repr(value))
    return seconds


def _compare_version(conn: Database, manifest: Manifest, cards: Mapping[str, ModelCard]) -> dict[str, Any]:
    """The /compare document of another version, read afresh (its labelled rows are not cached)."""
    labelled = LabelledRows.for_version(None, manifest)
    data = labelled.update(conn)
    champion = manifest.routing.champion
    return compare(
        manifest,
        cards,
        data,
        champion=champion,
        others=[n for n in cards if n != champion],
        served_rows=served_rows(conn, manifest.name, manifest.version),
        labelled_rows=labelled.rows,
        calibration=labelled.calibration(),
    )
