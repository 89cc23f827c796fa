"""The BentoML service: thin. It loads the repository and mounts the gateway's HTTP app.

Start with `gateway serve` (which verifies the repository first) or
`bentoml serve service.bento:EnsembleGateway` with GATEWAY_* settings in the environment.
"""

from __future__ import annotations

import logging

import bentoml

from service import connections, patches
from service.core.gateway import Gateway
from service.http.app import build_app
from service.http.hot import HotRoutesMiddleware
from service.settings import Settings
from service.supervision import watch_parent

log = logging.getLogger(__name__)

PATCHES = patches.apply_all()
SETTINGS = Settings()
connections.configure(SETTINGS.header_timeout_s, SETTINGS.max_connections)

# One Gateway per worker process: the app must exist at import time for @bentoml.asgi_app, the
# repository is loaded in __init__ (not at import, so `bentoml build` stays cheap).
gateway = Gateway(SETTINGS)
app = build_app(gateway)


@bentoml.service(
    name="ensemble_gateway",
    workers=1,
    traffic={"timeout": SETTINGS.request_timeout_s},
    # Our own /metrics replaces BentoML's per-request metrics middleware; no access log or tracing
    # spans on the hot routes (each costs more than an ONNX run).
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
    tracing={"excluded_urls": ["/predict", "/v2/", "/feedback", "/metrics", "/compare", "/models"]},
)
@bentoml.asgi_app(app, path="/")
class EnsembleGateway:
    """Serves every candidate of one model repository version side by side."""

    def __init__(self) -> None:
        gateway.load()
        watch_parent(gateway.close)
        patches.freeze_heap(gateway.settings.gc_thresholds)
        for result in PATCHES.values():
            if not result.applied:  # said again once logging is set up in the worker
                log.warning("patch %s did NOT apply: %s", result.name, result.reason)

    def __is_ready__(self) -> bool:
        return gateway.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        gateway.close()


# The hot routes answer ahead of BentoML's context middleware, its router and the mount; the rest of
# the app (and BentoML's /livez, /readyz) is reached as before.
EnsembleGateway.add_asgi_middleware(HotRoutesMiddleware, routes=app)  # type: ignore[attr-defined]
