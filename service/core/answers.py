"""Answers as clients see them: per-row JSON, the input schema, the repository description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contract.manifest import ColumnSpec, Manifest, Routing
from contract.outputs import Output
from service.runtime.repository import LoadedRepository


def rows_json(manifest: Manifest, out: Output) -> list[dict[str, Any]]:
    """Per-row answers: label and probabilities by class, or a value."""
    if manifest.task == "regression":
        assert out.values is not None
        return [{"value": v} for v in out.values.tolist()]
    assert out.labels is not None and out.proba is not None
    classes = [str(c) for c in manifest.classes]
    labels = manifest.classes
    # tolist() converts whole arrays at once: iterating numpy rows makes a numpy scalar per value.
    return [
        {"label": labels[lab], "probabilities": dict(zip(classes, p, strict=True))}
        for lab, p in zip(out.labels.tolist(), out.proba.tolist(), strict=True)
    ]


def schema_json(columns: Sequence[ColumnSpec]) -> list[dict[str, Any]]:
    """The input schema as clients see it."""
    return [
        {"name": c.name, "kind": c.kind, **({"categories": c.categories} if c.kind == "categorical" else {})}
        for c in columns
    ]


def describe_repository(repo: LoadedRepository, routing: Routing) -> dict[str, Any]:
    """GET /models: members, ensembles, cards, input schema and the routing in force."""
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
        "routing": routing.model_dump(mode="json") | {"rule": m.routing.rule},
    }
