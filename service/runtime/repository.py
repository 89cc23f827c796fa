"""A verified repository version loaded into onnxruntime sessions, and how variants are evaluated.

Members run once per request; every ensemble is computed from those outputs with contract.combine,
exactly as builders evaluated them offline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from contract import combine as combiners
from contract.manifest import EnsembleSpec, Manifest, ModelCard
from contract.outputs import Output
from contract.verify import RepositoryError, resolve_version, verify_with_cards

ORT_TYPES = {"numeric": "tensor(float)", "categorical": "tensor(string)"}


@dataclass(frozen=True)
class Variant:
    """Anything servable: a member (one session) or an ensemble (members + combiner)."""

    name: str
    kind: str
    members: tuple[str, ...]
    strategy: str | None = None
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
    """Per-member latency histograms (set by the gateway); empty means untimed."""

    @property
    def task(self) -> str:
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
        session = self.sessions[name]
        timer = self.timers.get(name)
        start = time.perf_counter()
        results = session.run(None, feeds)
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        if self.task == "regression":
            return Output(values=np.asarray(results[0], dtype=np.float64).reshape(-1))
        label, proba = results
        raw = np.asarray(label, dtype=np.int64).reshape(-1)
        p = np.asarray(proba, dtype=np.float64)
        threshold = self.variants[name].threshold
        served = combiners.apply_threshold(p, threshold) if threshold is not None else raw
        return Output(labels=served, proba=p, raw_labels=raw)

    def evaluate(self, name: str, outputs: Mapping[str, Output]) -> Output:
        """A variant's answer from member outputs that already include all of its members."""
        variant = self.variants[name]
        if variant.kind == "member":
            return outputs[name]
        members = [outputs[m] for m in variant.members]
        weights = list(variant.weights) if variant.weights is not None else None
        if self.task == "regression":
            vals = [m.values for m in members]
            if variant.strategy == "stack":
                assert variant.meta is not None
                (pred,) = self._run_meta(name, variant.meta, combiners.stack_features(vals, self.task))
                return Output(values=np.asarray(pred, dtype=np.float64).reshape(-1))
            return Output(values=np.asarray(combiners.mean(vals, weights), dtype=np.float64))
        n_classes = len(self.manifest.classes)
        if variant.strategy == "hard_vote":
            labels, shares = combiners.hard_vote([m.raw_labels for m in members], n_classes, weights)
            return Output(labels=labels, proba=shares)
        if variant.strategy == "stack":
            assert variant.meta is not None
            feats = combiners.stack_features([m.proba for m in members], self.task)
            _, proba = self._run_meta(name, variant.meta, feats)
            p = np.asarray(proba, dtype=np.float64)
        else:
            _, p = combiners.soft_average([m.proba for m in members], weights)
        return Output(labels=combiners.apply_threshold(p, variant.threshold), proba=p)

    def _run_meta(self, name: str, meta: ort.InferenceSession, features: npt.NDArray[Any]) -> list[Any]:
        timer = self.timers.get(name)
        start = time.perf_counter()
        out = meta.run(None, {"features": features})
        if timer is not None:
            timer.observe(time.perf_counter() - start)
        return list(out)

    def members_for(self, names: Iterable[str]) -> list[str]:
        """Members needed to evaluate the given variants, in manifest order, each once."""
        needed = {m for n in names for m in self.variants[n].members}
        return [m.name for m in self.manifest.members if m.name in needed]


def _session(path: Path, providers: Sequence[str], threads: int) -> ort.InferenceSession:
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise RepositoryError(
            f"{path}: execution provider {missing[0]} is not available; available: {', '.join(available)}"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise RepositoryError(
            f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0][:200]}"
        ) from exc


def _check_outputs(path: Path, session: ort.InferenceSession, expected: Sequence[str]) -> None:
    outs = session.get_outputs()
    names = [o.name for o in outs]
    if names != list(expected):
        raise RepositoryError(f"{path}: expected outputs {list(expected)}, got {names}")
    for o in outs:
        if not str(o.type).startswith("tensor("):
            raise RepositoryError(
                f"{path}: output {o.name!r} is {o.type}, expected a plain tensor (zipmap off)"
            )


def _check_inputs(path: Path, session: ort.InferenceSession, manifest: Manifest) -> None:
    got = {i.name: (i.type, i.shape[-1] if len(i.shape) == 2 else None) for i in session.get_inputs()}
    want = {name: (ORT_TYPES[kind], width) for name, (kind, width) in manifest.onnx_inputs().items()}
    if got != want:
        diff = sorted(map(str, set(got.items()) ^ set(want.items())))[:3]
        raise RepositoryError(f"{path}: inputs do not match the manifest schema (differences: {diff})")


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
        session = _session(file, providers, threads)
        _check_inputs(file, session, manifest)
        _check_outputs(file, session, member.outputs)
        card = cards[member.name]
        sessions[member.name] = session
        variants[member.name] = Variant(
            name=member.name,
            kind="member",
            members=(member.name,),
            threshold=card.decision_threshold,
            family=member.family,
        )
    for ens in manifest.ensembles:
        card = cards[ens.name]
        variants[ens.name] = Variant(
            name=ens.name,
            kind="ensemble",
            members=tuple(ens.members),
            strategy=ens.strategy,
            weights=tuple(ens.weights) if ens.weights is not None else None,
            threshold=card.decision_threshold,
            meta=_meta_session(version_dir, ens, manifest, providers, threads),
            family=ens.strategy,
        )
    return LoadedRepository(
        path=version_dir, manifest=manifest, cards=cards, sessions=sessions, variants=variants
    )


def _meta_session(
    version_dir: Path, ens: EnsembleSpec, manifest: Manifest, providers: Sequence[str], threads: int
) -> ort.InferenceSession | None:
    if ens.meta_model is None:
        return None
    file = version_dir / ens.meta_model
    session = _session(file, providers, threads)
    expected = ["variable"] if manifest.task == "regression" else ["label", "probabilities"]
    _check_outputs(file, session, expected)
    inputs = session.get_inputs()
    per_member = 1 if manifest.task in ("regression", "binary") else len(manifest.classes)
    width = per_member * len(ens.members)
    if len(inputs) != 1 or inputs[0].name != "features" or inputs[0].shape[-1] != width:
        raise RepositoryError(f"{file}: expected one input 'features' of width {width}")
    return session
