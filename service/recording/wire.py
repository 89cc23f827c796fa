"""Answered requests as a compact batch for the evaluator process.

Pickling each request's outputs and feeds costs ~22 µs a request (numpy arrays pickle one by one);
here a batch becomes a few concatenated arrays plus one small tuple per request, and the evaluator
slices them back (views, no copies). Encoding runs on the worker's sender thread, decoding in the
evaluator; :func:`decode` returns exactly the arrays :func:`encode` was given (dtype and shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.outputs import Output
from service.recording.finisher import ShadowJob

FIELDS = ("labels", "proba", "values", "raw_labels")
SAME_AS_MEMBER = -1
"""In place of the served output: it is the served variant's own member output (a member served)."""


@dataclass(frozen=True)
class Decoded:
    """One answered request, rebuilt without its repository (the evaluator loads that by path)."""

    deadline: float
    path: str
    request_id: str
    variant: str
    role: str
    rows: int
    output: Output
    members: dict[str, Output]
    feeds: dict[str, npt.NDArray[Any]]
    shadow: tuple[str, ...]


class _Blocks:
    """Arrays grouped by (kind, dtype, trailing shape), concatenated once per batch."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, np.dtype[Any], tuple[int, ...]], int] = {}
        self.parts: list[list[npt.NDArray[Any]]] = []

    def add(self, kind: str, array: npt.NDArray[Any]) -> int:
        key = (kind, array.dtype, array.shape[1:])
        index = self.keys.get(key)
        if index is None:
            index = self.keys[key] = len(self.parts)
            self.parts.append([])
        self.parts[index].append(array)
        return index

    def arrays(self) -> list[npt.NDArray[Any]]:
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in self.parts]


def encode(jobs: list[tuple[float, ShadowJob]]) -> tuple[list[tuple[Any, ...]], list[npt.NDArray[Any]]]:
    """(one tuple per request, the concatenated arrays its outputs and feeds are slices of)."""
    blocks = _Blocks()
    paths: dict[int, str] = {}

    def put(out: Output) -> tuple[int, ...]:
        return tuple(-1 if (a := getattr(out, f)) is None else blocks.add(f, a) for f in FIELDS)

    metas = []
    for deadline, job in jobs:
        s = job.served
        path = paths.get(id(s.repo))
        if path is None:
            path = paths[id(s.repo)] = str(s.repo.path)
        members = tuple((name, put(out)) for name, out in s.members.items())
        served: tuple[int, ...] | int = (
            SAME_AS_MEMBER if s.members.get(s.variant) is s.output else put(s.output)
        )
        feeds = tuple((k, blocks.add("feed:" + k, a)) for k, a in job.feeds.items()) if job.shadow else ()
        metas.append(
            (deadline, path, s.request_id, s.variant, s.role, s.rows, served, members, feeds, job.shadow)
        )
    return metas, blocks.arrays()


def decode(metas: list[tuple[Any, ...]], arrays: list[npt.NDArray[Any]]) -> list[Decoded]:
    """The requests :func:`encode` packed, in order."""
    offsets = [0] * len(arrays)

    def take(index: int, rows: int) -> npt.NDArray[Any]:
        start = offsets[index]
        offsets[index] = start + rows
        return arrays[index][start : start + rows]

    def get(slots: tuple[int, ...], rows: int) -> Output:
        labels, proba, values, raw = (None if i < 0 else take(i, rows) for i in slots)
        return Output(labels=labels, proba=proba, values=values, raw_labels=raw)

    out = []
    for deadline, path, request_id, variant, role, rows, served, members, feeds, shadow in metas:
        member_outputs = {name: get(slots, rows) for name, slots in members}
        output = member_outputs[variant] if served == SAME_AS_MEMBER else get(served, rows)
        out.append(
            Decoded(
                deadline=deadline,
                path=path,
                request_id=request_id,
                variant=variant,
                role=role,
                rows=rows,
                output=output,
                members=member_outputs,
                feeds={k: take(i, rows) for k, i in feeds},
                shadow=shadow,
            )
        )
    return out
