"""Answered requests as a compact batch for the evaluator process.

Pickling each request's outputs and feeds costs ~22 µs a request (numpy arrays pickle one by one);
here a batch becomes a few concatenated arrays plus one small tuple per request, and the evaluator
slices them back (views, no copies). Encoding runs on the worker's sender thread, decoding in the
evaluator; :func:`decode` returns the same Jobs :func:`encode` was given (arrays of the same dtype
and shape).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from contract.outputs import Output
from service.recording.jobs import Job
from service.recording.messages import JobBatch, JobMeta

FIELDS = ("labels", "proba", "values", "raw_labels")
SAME_AS_MEMBER = -1
"""In place of the served output: it is the served variant's own member output (a member served)."""


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


def encode(jobs: list[Job], seq: int = 0, resent: bool = False) -> JobBatch:
    """One batch of the jobs, in order, numbered ``seq``."""
    blocks = _Blocks()

    def put(out: Output) -> tuple[int, ...]:
        return tuple(-1 if (a := getattr(out, f)) is None else blocks.add(f, a) for f in FIELDS)

    metas = []
    for j in jobs:
        members = tuple((name, put(out)) for name, out in j.members.items())
        served: tuple[int, ...] | int = (
            SAME_AS_MEMBER if j.members.get(j.variant) is j.output else put(j.output)
        )
        feeds = tuple((k, blocks.add("feed:" + k, a)) for k, a in j.feeds.items()) if j.shadow else ()
        metas.append(
            JobMeta(
                j.request_id,
                j.variant,
                j.role,
                j.rows,
                j.repository,
                j.model,
                j.version,
                served,
                members,
                feeds,
                j.shadow,
                j.deadline,
            )
        )
    return JobBatch(metas, blocks.arrays(), seq, resent)


def decode(batch: JobBatch) -> list[Job]:
    """The jobs :func:`encode` packed, in order."""
    arrays = batch.arrays
    offsets = [0] * len(arrays)

    def take(index: int, rows: int) -> npt.NDArray[Any]:
        start = offsets[index]
        offsets[index] = start + rows
        return arrays[index][start : start + rows]

    def get(slots: tuple[int, ...], rows: int) -> Output:
        labels, proba, values, raw = (None if i < 0 else take(i, rows) for i in slots)
        return Output(labels=labels, proba=proba, values=values, raw_labels=raw)

    out = []
    for m in batch.metas:
        members = {name: get(slots, m.rows) for name, slots in m.members}
        output = members[m.variant] if m.served == SAME_AS_MEMBER else get(m.served, m.rows)  # type: ignore[arg-type]
        out.append(
            Job(
                request_id=m.request_id,
                variant=m.variant,
                role=m.role,
                rows=m.rows,
                output=output,
                members=members,
                repository=m.repository,
                model=m.model,
                version=m.version,
                feeds={k: take(i, m.rows) for k, i in m.feeds},
                shadow=m.shadow,
                deadline=m.deadline,
                batch=batch.seq,
            )
        )
    return out
