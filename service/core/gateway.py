"""The request core shared by every transport (JSON API and Open Inference Protocol).

One request: validate -> route -> run each needed member once -> the served variant's answer ->
respond; shadow variants (and the members only they need) run afterwards on the shadow worker, from
the same feeds, so every variant is scored on identical traffic.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt

from contract.manifest import Routing
from service import metrics
from service.core.requests import check_request_id, records_to_feeds, rows_json, schema_json
from service.core.routing import Router
from service.errors import InvalidField, NotReady, UnknownVariant, describe
from service.ledger.feedback import FeedbackStore
from service.ledger.reads import LabelledRows, served_rows
from service.ledger.store import Ledger, connect
from service.recording.finisher import Finisher, Recorder, Served, ShadowJob
from service.recording.process import OffloadExecutor, apply_tally
from service.recording.threads import ShadowExecutor
from service.runtime.repository import LoadedRepository, load
from service.settings import Settings
from service.stats.compare import compare

log = logging.getLogger(__name__)
ALIASES = ("champion",)
# Generated request ids: a random per-process prefix and a counter (uuid4 costs an os.urandom call
# per request); unique across workers and restarts.
_ID_PREFIX = secrets.token_hex(6) + "-"
_ID_COUNTER = itertools.count(1)


class Gateway:
    """Holds the loaded repository and routing; swaps both atomically on reload."""

    def __init__(self, settings: Settings, recorder: Recorder | None = None) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._repo: LoadedRepository | None = None
        self._router: Router | None = None
        self.recorder = recorder
        """Extra observer of every fully evaluated request (tests, experiments); only called when
        shadow work runs on a thread of this process (``evaluator_process=False``)."""
        self.children = metrics.Children([])
        self._finisher = Finisher(lambda: self.children, lambda: self.ledger, lambda: self.recorder)
        self.offloaded = settings.evaluator_process
        """Shadow work and ledger writes run in the evaluator process (service/offload.py)."""
        self.shadow: ShadowExecutor[ShadowJob] | OffloadExecutor
        if self.offloaded:
            self.shadow = OffloadExecutor(
                settings,
                apply=lambda doc: apply_tally(doc, self.children),
                on_drop=lambda r, n: metrics.DROPPED.labels(r).inc(n),
            )
        else:
            self.shadow = ShadowExecutor(
                self._finisher.settle,
                settings.shadow_queue,
                settings.shadow_timeout_s,
                on_full=lambda: self.children.dropped["shadow_queue_full"].inc(),
                gather_s=settings.shadow_gather_s,
            )
        self._ledger: Ledger | None = None
        self._feedback: FeedbackStore | None = None
        self._feedback_lock = threading.Lock()
        self._compare_lock = threading.Lock()
        self._labelled: LabelledRows | None = None

    @property
    def ledger(self) -> Ledger | None:
        """This process's ledger writer, opened on first load (not at import: `bentoml build` imports
        us); None when the evaluator process writes the ledger, or the ledger is disabled."""
        if self._ledger is None and self.settings.ledger_enabled and not self.offloaded:
            with self._lock:
                if self._ledger is None:
                    s = self.settings
                    self._ledger = Ledger(
                        s.ledger_path,
                        s.ledger_flush_interval_s,
                        retention_s=s.ledger_retention_s,
                        max_unlabelled_rows=s.ledger_max_unlabelled_rows,
                    )
        return self._ledger

    # --- loading -------------------------------------------------------------------------------
    def load(self, path: Path | None = None) -> LoadedRepository:
        """Load and verify a repository, then swap it in (with its manifest routing) in one step."""
        repo = load(path or self.settings.repository, self.settings.providers, self.settings.intra_op_threads)
        router = Router.from_routing(repo.manifest.routing, repo.variants, self.settings.shadow_fraction)
        children = metrics.Children(repo.variants, repo.timed)
        repo.timers = children.inference
        _ = self.ledger
        if isinstance(self.shadow, OffloadExecutor) and not self.shadow.prepare(repo.path):
            # Serving goes on; the evaluator loads the version with its first jobs (or is restarted).
            log.error("the evaluator process did not load %s in time", repo.path)
        with self._lock:
            old = self._repo
            self._repo, self._router, self.children = repo, router, children
        self._publish_info(repo, old)
        self._publish_routing(router, repo)
        return repo

    @staticmethod
    def _publish_info(repo: LoadedRepository, old: LoadedRepository | None) -> None:
        m = repo.manifest
        if old is not None:
            for name, v in old.variants.items():
                metrics.MODEL_INFO.labels(
                    name, str(old.manifest.version), v.family, v.kind, old.manifest.name
                ).set(0)
                if name not in repo.variants:
                    # Gone with the old version: no routing role, no offline score to compare with.
                    for role in ("champion", "challenger", "shadow"):
                        metrics.ROUTING_ROLE.labels(name, role).set(0)
                    for metric in old.cards[name].metrics.get("test", {}):
                        metrics.OFFLINE_SCORE.labels(name, metric).set(float("nan"))
        for name, v in repo.variants.items():
            metrics.MODEL_INFO.labels(name, str(m.version), v.family, v.kind, m.name).set(1)
            for metric, value in repo.cards[name].metrics.get("test", {}).items():
                metrics.OFFLINE_SCORE.labels(name, metric).set(value)

    @staticmethod
    def _publish_routing(router: Router, repo: LoadedRepository) -> None:
        challengers = dict(router.challengers)
        for name in repo.variants:
            roles = {
                "champion": name == router.champion,
                "challenger": name in challengers,
                "shadow": name in router.shadow,
            }
            for role, on in roles.items():
                metrics.ROUTING_ROLE.labels(name, role).set(1 if on else 0)

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
        self._publish_routing(router, self.repo)
        return router

    # --- serving -------------------------------------------------------------------------------
    def predict_json(
        self, body: Mapping[str, Any], header_request_id: str | None
    ) -> tuple[dict[str, Any], Served]:
        """The JSON API: {"records": [...], "variant"?, "routing_key"?, "request_id"?, "return_members"?}."""
        allowed = {"records", "variant", "routing_key", "request_id", "return_members"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise InvalidField(extra[0], f"one of {', '.join(sorted(allowed))}", "an unknown field")
        if "records" not in body:
            raise InvalidField("records", "a list of records", "no field")
        repo, router = self.repo, self.router  # one snapshot for the whole request
        feeds = records_to_feeds(repo.manifest, body["records"], self.settings.max_batch_rows)
        return_members = body.get("return_members", False)
        if not isinstance(return_members, bool):
            raise InvalidField("return_members", "true or false", describe(return_members))
        routing_key = body.get("routing_key")
        if routing_key is not None and (not isinstance(routing_key, str) or not routing_key):
            raise InvalidField("routing_key", "a non-empty string", describe(routing_key))
        request_id = self.request_id(body.get("request_id"), header_request_id)
        served = self.serve(
            repo,
            router,
            feeds,
            len(body["records"]),
            variant=body.get("variant"),
            routing_key=routing_key,
            request_id=request_id,
            return_members=return_members,
        )
        out: dict[str, Any] = {
            "request_id": request_id,
            "model": repo.manifest.name,
            "version": repo.manifest.version,
            "variant": served.variant,
            "role": served.role,
            "predictions": rows_json(repo.manifest, served.output),
        }
        if return_members:
            out["members"] = {name: rows_json(repo.manifest, o) for name, o in served.members.items()}
        return out, served

    @staticmethod
    def request_id(body_id: Any, header_id: str | None) -> str:
        """Client-supplied (body first, then header) or generated."""
        if body_id is not None:
            return check_request_id(body_id)
        if header_id:
            return check_request_id(header_id, field="X-Request-ID")
        return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"

    def resolve_variant(self, repo: LoadedRepository, router: Router, name: Any) -> str:
        """A forced variant name; "champion" means the current champion."""
        if not isinstance(name, str):
            raise InvalidField("variant", "a variant name", describe(name))
        if name == "champion":
            return router.champion
        if name not in repo.variants:
            raise UnknownVariant(name, [*repo.variants, *ALIASES])
        return name

    def serve(
        self,
        repo: LoadedRepository,
        router: Router,
        feeds: dict[str, npt.NDArray[Any]],
        rows: int,
        *,
        variant: Any,
        routing_key: str | None,
        request_id: str,
        return_members: bool,
    ) -> Served:
        """Route, run the needed members once, answer, and queue the shadow work."""
        if variant is not None:
            name, role = self.resolve_variant(repo, router, variant), "forced"
        else:
            name, role = router.assign(routing_key or request_id)
        shadow = router.shadow_for(request_id, name)
        needed = repo.members_for([name]) if not return_members else [m.name for m in repo.manifest.members]
        outputs = repo.run_members(feeds, needed)
        answer = repo.evaluate(name, outputs)
        served = Served(
            request_id=request_id,
            variant=name,
            role=role,
            output=answer,
            members=outputs,
            repo=repo,
            rows=rows,
        )
        c = self.children
        c.predictions[(name, "served")].inc(rows)
        for m in outputs:
            if m != name:
                c.predictions[(m, "member")].inc(rows)
        c.served_rows.inc(rows)
        if self.offloaded:
            if shadow or self.settings.ledger_enabled:
                self.shadow.submit(ShadowJob(served, feeds, tuple(shadow)))
            return served
        if (shadow or self.recorder is not None) and self.shadow.submit(
            ShadowJob(served, feeds, tuple(shadow))
        ):
            return served
        # No shadow work (or no room for it): record what was served right away.
        self._finisher.record(served)
        return served

    def _flush_records(self) -> bool:
        """Commit every prediction answered so far; True when that happened in time."""
        ok = self.shadow.barrier()
        ledger = self._ledger
        return (ledger.flush() if ledger is not None else True) and ok

    # --- live evaluation -----------------------------------------------------------------------
    def feedback(self, body: Any) -> dict[str, Any]:
        """POST /feedback (blocking: call from a worker thread)."""
        if not self.settings.ledger_enabled:
            raise NotReady("the ledger is disabled (GATEWAY_LEDGER_ENABLED=false): labels cannot be joined")
        repo = self.repo
        with self._feedback_lock:
            if self._feedback is None:
                # Requests answered before a label may still be queued where their record is made:
                # the store commits them (this callable) before it joins.
                self._feedback = FeedbackStore(
                    self.settings.ledger_path, self._flush_records, self.settings.feedback_retry_s
                )
            store = self._feedback
        return store.submit(repo.manifest, body).as_json()

    def compare(self) -> dict[str, Any]:
        """GET /compare (blocking: call from a worker thread)."""
        if not self.settings.ledger_enabled:
            raise NotReady("the ledger is disabled (GATEWAY_LEDGER_ENABLED=false): nothing to compare")
        repo, router = self.repo, self.router
        self._flush_records()
        conn = connect(self.settings.ledger_path)
        try:
            others = [n for n in repo.variants if n != router.champion]
            with self._compare_lock:  # the labelled rows read so far are shared by every call
                labelled = self._labelled = LabelledRows.for_version(self._labelled, repo.manifest)
                data = labelled.update(conn)
                m = repo.manifest
                return compare(
                    m,
                    repo.cards,
                    data,
                    champion=router.champion,
                    others=others,
                    served_rows=served_rows(conn, m.name, m.version),
                    labelled_rows=labelled.rows,
                )
        finally:
            conn.close()

    # --- description ---------------------------------------------------------------------------
    def models_json(self) -> dict[str, Any]:
        """GET /models: members, ensembles, cards and routing."""
        repo, router = self.repo, self.router
        m = repo.manifest
        return {
            "model": m.name,
            "version": m.version,
            "task": m.task,
            "path": str(repo.path),
            "classes": m.classes,
            "inputs": schema_json(m.inputs),
            "members": [
                {"name": s.name, "family": s.family, "card": repo.cards[s.name].model_dump(mode="json")}
                for s in m.members
            ],
            "ensembles": [
                {
                    "name": e.name,
                    "strategy": e.strategy,
                    "members": e.members,
                    "weights": e.weights,
                    "card": repo.cards[e.name].model_dump(mode="json"),
                }
                for e in m.ensembles
            ],
            "routing": router.as_routing().model_dump(mode="json") | {"rule": m.routing.rule},
        }

    def close(self) -> None:
        """Finish shadow work, then flush the ledger (graceful stop: nothing acknowledged is lost)."""
        self.shadow.close()
        if self._ledger is not None:
            self._ledger.close()
        if self._feedback is not None:
            self._feedback.close()
        metrics.flush()
