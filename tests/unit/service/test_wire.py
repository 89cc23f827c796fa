"""The evaluator's batch format gives back exactly what was answered, request by request."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from contract.outputs import Output
from service.recording.jobs import Job
from service.recording.wire import decode, encode


def classified(rng: np.random.Generator, rows: int, classes: int, dtype: Any = np.float64) -> Output:
    proba = rng.random((rows, classes)).astype(dtype)
    labels = proba.argmax(axis=1).astype(np.int64)
    return Output(labels=labels, proba=proba, raw_labels=labels.copy())


def same(a: Output, b: Output) -> bool:
    for field in ("labels", "proba", "values", "raw_labels"):
        x, y = getattr(a, field), getattr(b, field)
        if (x is None) != (y is None):
            return False
        if x is not None and (x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y)):
            return False
    return True


def job(
    i: int, variant: str, output: Output, members: dict[str, Output], repository: str, rows: int,
    feeds: dict[str, Any], shadow: tuple[str, ...],
) -> Job:  # fmt: skip
    return Job(
        request_id=f"r{i}",
        variant=variant,
        role="champion",
        rows=rows,
        output=output,
        members=members,
        repository=repository,
        model="churn",
        version=int(repository.rsplit("/", 1)[1]),
        feeds=feeds if shadow else {},
        shadow=shadow,
        deadline=float(i),
    )


def test_round_trip_keeps_every_array_dtype_and_row() -> None:
    rng = np.random.default_rng(0)
    jobs: list[Job] = []
    for i in range(40):
        rows = 1 + i % 3
        member = classified(rng, rows, 2)
        other = classified(rng, rows, 2, np.float32)  # a member whose graph gives float32
        if i % 4 == 0:  # an ensemble served: its own output
            served_name, output = "average", classified(rng, rows, 2)
        else:  # a member served: its output is the member's output object
            served_name, output = "logreg", member
        members = {"logreg": member, "tree": other} if i % 5 else {"logreg": member}
        shadow = ("tree", "vote") if i % 2 else ()
        feeds = {
            "numeric": rng.random((rows, 4)).astype(np.float32),
            "city": np.array([["paris"]] * rows, dtype=object),
        }
        repository = "/repo/churn/1" if i < 20 else "/repo/churn/2"
        jobs.append(job(i, served_name, output, members, repository, rows, feeds, shadow))
    values = Output(values=np.arange(3.0))
    jobs.append(job(99, "lin", values, {"lin": Output(values=np.arange(3.0))}, "/repo/churn/2", 3, {}, ()))

    batch = pickle.loads(pickle.dumps(encode(jobs), protocol=pickle.HIGHEST_PROTOCOL))
    decoded = decode(batch)

    assert len(decoded) == len(jobs)
    assert len(batch.arrays) < 12, "a handful of concatenated arrays, not one per request"
    scalars = (
        "deadline",
        "repository",
        "model",
        "version",
        "request_id",
        "variant",
        "role",
        "rows",
        "shadow",
    )
    for sent, got in zip(jobs, decoded, strict=True):
        assert [getattr(got, f) for f in scalars] == [getattr(sent, f) for f in scalars]
        assert same(got.output, sent.output)
        assert set(got.members) == set(sent.members)
        assert all(same(got.members[n], sent.members[n]) for n in sent.members)
        if sent.shadow:  # feeds travel only where shadow members will run on them
            assert set(got.feeds) == set(sent.feeds)
            for k, a in sent.feeds.items():
                assert got.feeds[k].dtype == a.dtype and np.array_equal(got.feeds[k], a)
        else:
            assert got.feeds == {}
