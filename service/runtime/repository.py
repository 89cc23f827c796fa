"""A verified repository version loaded into onnxruntime sessions, and how variants are evaluated.

Members run once per request; every ensemble is computed from those outputs with the contract's
:func:`~contract.combine.combine`, exactly as the builders evaluated them offline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt
import onnxruntime as ort

from contract.combine import MetaModel, combine
from contract.manifest import Manifest, ModelCard, Strategy, Task
from contract.outputs import Output, from_graph
from contract.reference import InputReference
from contract.verify import load_reference, resolve_version, verify_with_cards
from service.runtime.sessions import check_inputs, check_outputs, meta_session, open_session


@dataclass(frozen=True)
class Variant:
    """Anything servable: a member (one session) or an ensemble (members + combiner)."""

    name: str
    kind: str
    members: tuple[str, ...]
    strategy: Strategy | None = None
    weights: tuple[float, ...] | None = None
    threshold: float | None = None
    meta: ort.InferenceSession | None = None
    family: str = ""


@dataclass
class LoadedRepository:
    """One verified repository version, ready to serve."""

    path: Path
    manifest: Manifest
    cards: dict[str, ModelCard]
    sessions: dict[str, ort.InferenceSession]
    variants: dict[str, Variant] = field(default_factory=dict)
    timers: dict[str, Any] = field(default_factory=dict)
    """Per-graph latency histograms (set by whoever serves it); empty means untimed."""
    reference: InputReference | None = None
    """The training data's input reference (None: built before references were written)."""

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def timed(self) -> list[str]:
        """Variants that run an ONNX graph of their own (members, stacking meta-models): the ones with
        an inference latency."""
        return [n for n, v in self.variants.items() if v.kind == "member" or v.meta is not None]

    def run_members(self, feeds: Mapping[str, npt.NDArray[Any]], names: Iterable[str]) -> dict[str, Output]:
        """Run each named member once."""
        return {name: self._run_member(name, feeds) for name in names}

    def _run_member(self, name: str, feeds: Mapping[str, npt.NDArray[Any]]) -> Output:
        results = self._timed_run(name, self.sessions[name], feeds)
        return from_graph(results, self.task, self.variants[name].threshold)

    def evaluate(self, name: str, outputs: Mapping[str, Output]) -> Output:
        """A variant's answer from member outputs that already include all of its members."""
        variant = self.variants[name]
        if variant.kind == "member":
            return outputs[name]
        assert variant.strategy is not None
        return combine(
            variant.strategy,
            [outputs[m] for m in variant.members],
            task=self.manifest.task,
            n_classes=len(self.manifest.classes),
            weights=variant.weights,
            threshold=variant.threshold,
            meta=self._meta_model(name, variant.meta) if variant.meta is not None else None,
        )

    def _meta_model(self, name: str, session: ort.InferenceSession) -> MetaModel:
        return lambda features: self._timed_run(name, session, {"features": features})

    def _timed_run(
        self, name: str, session: ort.InferenceSession, feeds: Mapping[str, npt.NDArray[Any]]
    ) -> Sequence[Any]:
        timer = self.timers.get(name)
        start = time.perf_counter()
        results = session.run(None, feeds)
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        return list(results)

    def members_for(self, names: Iterable[str]) -> list[str]:
        """Members needed to evaluate the given variants, in manifest order, each once."""
        needed = {m for n in names for m in self.variants[n].members}
        return [m.name for m in self.manifest.members if m.name in needed]


def load(
    path: Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 1
) -> LoadedRepository:
    """Resolve, verify and load a repository version; RepositoryError names the file on any problem."""
    version_dir = resolve_version(path)
    manifest, cards = verify_with_cards(version_dir)
    sessions: dict[str, ort.InferenceSession] = {}
    variants: dict[str, Variant] = {}
    for member in manifest.members:
        file = version_dir / member.path
        session = open_session(file, providers, threads)
        check_inputs(file, session, manifest)
        check_outputs(file, session, member.outputs)
        sessions[member.name] = session
        variants[member.name] = Variant(
            name=member.name,
            kind="member",
            members=(member.name,),
            threshold=cards[member.name].decision_threshold,
            family=member.family,
        )
    for ens in manifest.ensembles:
        variants[ens.name] = Variant(
            name=ens.name,
            kind="ensemble",
            members=tuple(ens.members),
            strategy=ens.strategy,
            weights=tuple(ens.weights) if ens.weights is not None else None,
            threshold=cards[ens.name].decision_threshold,
            meta=meta_session(version_dir, ens, manifest, providers, threads),
            family=ens.strategy,
        )
    return LoadedRepository(
        path=version_dir,
        manifest=manifest,
        cards=cards,
        sessions=sessions,
        variants=variants,
        reference=load_reference(version_dir, manifest),
    )
