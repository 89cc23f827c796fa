"""onnxruntime sessions for a repository's graphs, checked against the manifest when they load.

Every session names its execution providers; one that is not available is a load error, never a silent
fallback to another. Inputs must be exactly the manifest's (one [N, k] float input for the numeric
columns, one string input per categorical or text column) and outputs plain tensors with the manifest's names
(a ZipMap output is a sequence of maps: refused with a hint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from contract.manifest import EnsembleSpec, Manifest
from contract.verify import RepositoryError

ORT_TYPES = {"numeric": "tensor(float)", "categorical": "tensor(string)", "text": "tensor(string)"}


def open_session(path: Path, providers: Sequence[str], threads: int) -> ort.InferenceSession:
    """A session with exactly these providers and ``threads`` intra-op threads."""
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


def check_outputs(path: Path, session: ort.InferenceSession, expected: Sequence[str]) -> None:
    """Outputs named as the manifest says, each a plain tensor."""
    outs = session.get_outputs()
    names = [o.name for o in outs]
    if names != list(expected):
        raise RepositoryError(f"{path}: expected outputs {list(expected)}, got {names}")
    for o in outs:
        if not str(o.type).startswith("tensor("):
            raise RepositoryError(
                f"{path}: output {o.name!r} is {o.type}, expected a plain tensor (zipmap off)"
            )


def check_inputs(path: Path, session: ort.InferenceSession, manifest: Manifest) -> None:
    """Inputs exactly the manifest's graph inputs, with their types and widths."""
    got = {i.name: (i.type, i.shape[-1] if len(i.shape) == 2 else None) for i in session.get_inputs()}
    want = {name: (ORT_TYPES[kind], width) for name, (kind, width) in manifest.onnx_inputs().items()}
    if got != want:
        diff = sorted(map(str, set(got.items()) ^ set(want.items())))[:3]
        raise RepositoryError(f"{path}: inputs do not match the manifest schema (differences: {diff})")


def meta_session(
    version_dir: Path, ens: EnsembleSpec, manifest: Manifest, providers: Sequence[str], threads: int
) -> ort.InferenceSession | None:
    """The stacking meta-model's session (None for other strategies): one input 'features' as wide as
    the members' stacked outputs."""
    if ens.meta_model is None:
        return None
    file = version_dir / ens.meta_model
    session = open_session(file, providers, threads)
    expected = ["variable"] if manifest.task == "regression" else ["label", "probabilities"]
    check_outputs(file, session, expected)
    inputs = session.get_inputs()
    per_member = 1 if manifest.task in ("regression", "binary") else len(manifest.classes)
    width = per_member * len(ens.members)
    if len(inputs) != 1 or inputs[0].name != "features" or inputs[0].shape[-1] != width:
        raise RepositoryError(f"{file}: expected one input 'features' of width {width}")
    return session
