"""The evaluator's batch format gives back exactly what was answered, request by request."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np

from contract.outputs import Output
from service.recording.finisher import Served, ShadowJob
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


def test_round_trip_keeps_every_array_dtype_and_row() -> None:
    rng = np.random.default_rng(0)
    old, new = SimpleNamespace(path="/repo/churn/1"), SimpleNamespace(path="/repo/churn/2")
    jobs: list[tuple[float, ShadowJob]] = []
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
        served = Served(f"r{i}", served_name, "champion", output, members, old if i < 20 else new, rows)  # type: ignore[arg-type]
        jobs.append((float(i), ShadowJob(served, feeds, shadow)))
    jobs.append(
        (
            99.0,
            ShadowJob(
                Served(
                    "reg",
                    "lin",
                    "forced",
                    Output(values=np.arange(3.0)),
                    {"lin": Output(values=np.arange(3.0))},
                    new,
                    3,
                ),
                {},
                (),
            ),
        )
    )  # type: ignore[arg-type]

    metas, arrays = encode(jobs)
    metas, arrays = pickle.loads(pickle.dumps((metas, arrays), protocol=pickle.HIGHEST_PROTOCOL))
    decoded = decode(metas, arrays)

    assert len(decoded) == len(jobs)
    assert len(arrays) < 12, "a handful of concatenated arrays, not one per request"
    for (deadline, job), got in zip(jobs, decoded, strict=True):
        s = job.served
        assert (got.deadline, got.path, got.request_id, got.variant, got.role, got.rows, got.shadow) == (
            deadline,
            s.repo.path,
            s.request_id,
            s.variant,
            s.role,
            s.rows,
            job.shadow,
        )
        assert same(got.output, s.output)
        assert set(got.members) == set(s.members)
        assert all(same(got.members[n], s.members[n]) for n in s.members)
        if job.shadow:  # feeds travel only where shadow members will run on them
            assert set(got.feeds) == set(job.feeds)
            for k, a in job.feeds.items():
                assert got.feeds[k].dtype == a.dtype and np.array_equal(got.feeds[k], a)
        else:
            assert got.feeds == {}
