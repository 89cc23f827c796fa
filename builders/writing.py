"""Writing a built version into the repository: every member's graph and card, every ensemble's card
(and meta-model), the report, then the manifest with the checksum of every file, atomically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from builders import export
from builders.context import BuildContext, frame_feeds
from builders.estimation import fit_estimator
from builders.evaluated import Evaluated, ReportFacts
from builders.repository import publish, staging
from contract.manifest import CARD_FILE, EnsembleSpec, Manifest, MemberSpec, Routing
from contract.reference import REFERENCE_FILE, build_reference
from contract.verify import load_card


def write_version(
    ctx: BuildContext,
    models: list[Evaluated],
    excluded: list[Evaluated],
    routing: Routing,
    facts: ReportFacts,
    metric: str,
) -> Path:
    """Stage the version folder and publish it under the next free version number."""
    from builders import report  # matplotlib is slow to import; only needed here

    table = ctx.table
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with staging(ctx.opts.out, table.name) as tmp:
        specs = [_stage(m, tmp, ctx, metric) for m in models]
        report.write(tmp, ctx, models, excluded, facts, metric, routing)
        # what the service's /drift compares live inputs with: the rows the members were trained on
        reference = build_reference(table.columns, frame_feeds(table.columns, ctx.x_train))
        (tmp / REFERENCE_FILE).write_text(reference.model_dump_json() + "\n")

        def make_manifest(version: int, files: dict[str, str]) -> Manifest:
            return Manifest(
                name=table.name,
                version=version,
                created_at=created,
                task=table.task,
                target=table.fingerprint.target,
                inputs=table.columns,
                dropped_columns=table.dropped,
                classes=table.classes,
                primary_metric=metric,
                members=[s for s in specs if isinstance(s, MemberSpec)],
                ensembles=[s for s in specs if isinstance(s, EnsembleSpec)],
                routing=routing,
                dataset=table.fingerprint,
                library_versions=ctx.versions,
                files=files,
                opset=dict(export.TARGET_OPSET),
            )

        return publish(tmp, make_manifest)


def _stage(m: Evaluated, tmp: Path, ctx: BuildContext, metric: str) -> MemberSpec | EnsembleSpec:
    """One model's folder (graph and card) and its manifest entry."""
    folder = tmp / ("members" if m.kind == "member" else "ensembles") / m.name
    folder.mkdir(parents=True)
    onnx_rel = None
    if m.onnx_bytes is not None:
        graph = folder / ("model.onnx" if m.kind == "member" else "meta.onnx")
        graph.write_bytes(m.onnx_bytes)
        onnx_rel = str(graph.relative_to(tmp))
    estimator = (
        fit_estimator(m.outputs["validation"], ctx.y_val, ctx.n_classes)
        if ctx.classification and ctx.table.labelled
        else None
    )
    card = m.card(ctx.table.fingerprint, ctx.versions, metric, estimator)
    (folder / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
    # Read back as the service will: a value the schema refuses (a NaN becomes null) must fail the
    # build here, inside the staging folder, not the service's load of a published version.
    load_card(folder / CARD_FILE)
    card_rel = str((folder / CARD_FILE).relative_to(tmp))
    if m.kind == "member":
        assert onnx_rel is not None and card.sha256 is not None
        outputs = ["label", "probabilities"] if ctx.classification else ["variable"]
        return MemberSpec(
            name=m.name, family=m.family, path=onnx_rel, card=card_rel, sha256=card.sha256, outputs=outputs
        )
    assert m.strategy is not None
    return EnsembleSpec(
        name=m.name,
        strategy=m.strategy,
        members=m.members,
        weights=m.weights,
        meta_model=onnx_rel,
        meta_sha256=card.sha256 if onnx_rel else None,
        card=card_rel,
    )
