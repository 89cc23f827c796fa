"""The gauges that describe what is loaded and how it is routed, set at each load and routing change."""

from __future__ import annotations

from service import metrics
from service.core.routing import Router
from service.runtime.repository import LoadedRepository


def publish_models(repo: LoadedRepository, old: LoadedRepository | None) -> None:
    """gateway_model_info and gateway_offline_score for the new version; the old version's series at 0
    (or NaN for scores of models that are gone), so dashboards stop showing them."""
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


def publish_routing(router: Router, repo: LoadedRepository) -> None:
    """gateway_routing_role: 1 for each model's current roles, 0 for the others."""
    challengers = dict(router.challengers)
    for name in repo.variants:
        roles = {
            "champion": name == router.champion,
            "challenger": name in challengers,
            "shadow": name in router.shadow,
        }
        for role, on in roles.items():
            metrics.ROUTING_ROLE.labels(name, role).set(1 if on else 0)
