"""What happens to a request after it is answered: its shadow variants, its metrics and its record.

A :class:`Finisher` does this work for batches of answered requests on the shadow worker's thread
(service/shadow.py). Jobs with the same repository and shadow set share one run of each member over all
their rows; results are identical row by row to evaluating each request alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from contract.outputs import Output, concat_outputs, slice_output
from service.ledger.store import Entry, Ledger
from service.runtime.repository import LoadedRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """What one request produced: the answer, and every output computed for it."""

    request_id: str
    variant: str
    role: str
    """champion, challenger, forced (the client named the variant)."""
    output: Output
    members: dict[str, Output]
    repo: LoadedRepository
    rows: int


@dataclass(frozen=True)
class ShadowResult:
    """Everything evaluated for one request, served and shadow, handed to the recorder."""

    served: Served
    variants: dict[str, Output]
    """Served variant, every shadow variant, and every member that ran."""


Recorder = Callable[[ShadowResult], None]


@dataclass(frozen=True)
class ShadowJob:
    """A served request whose shadow variants (and unrecorded outputs) are still to be done."""

    served: Served
    feeds: Mapping[str, npt.NDArray[Any]]
    shadow: tuple[str, ...]


class Count(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


class Sink(Protocol):
    """Where the finisher counts what it did (metrics.Children; anything with the same counters)."""

    @property
    def predictions(self) -> Mapping[tuple[str, str], Count]: ...
    @property
    def disagreement(self) -> Mapping[str, Count]: ...
    @property
    def compared(self) -> Mapping[str, Count]: ...
    @property
    def dropped(self) -> Mapping[str, Count]: ...


class Finisher:
    """Shadow evaluation, disagreement counts and ledger records for batches of served requests.

    The sink, ledger and recorder are read through callables, so a reload (new metric children) or a
    recorder set later (tests) takes effect on the next batch."""

    def __init__(
        self,
        sink: Callable[[], Sink],
        ledger: Callable[[], Ledger | None],
        recorder: Callable[[], Recorder | None] = lambda: None,
    ) -> None:
        self._sink = sink
        self._ledger = ledger
        self._recorder = recorder

    def settle(self, fresh: list[ShadowJob], late: list[ShadowJob]) -> None:
        """Everything a batch of answered requests gets: shadow work for the fresh ones; for the late
        ones (past their deadline), and for all of them when the shadow work fails, only the record
        of what was answered, with the shadow work counted as dropped."""
        sink = self._sink()
        if late:
            sink.dropped["shadow_timeout"].inc(sum(1 for j in late if j.shadow))
            self.record_served(late)
        try:
            self.finish(fresh)
        except Exception:  # a failing variant must not lose the answers
            log.exception("shadow batch of %d jobs failed", len(fresh))
            sink.dropped["shadow_failed"].inc(sum(1 for j in fresh if j.shadow))
            self.record_served(fresh)

    def finish(self, jobs: list[ShadowJob]) -> None:
        """Shadow work and records for many requests at once."""
        groups: dict[tuple[int, tuple[str, ...]], list[ShadowJob]] = {}
        for job in jobs:
            groups.setdefault((id(job.served.repo), job.shadow), []).append(job)
        for group in groups.values():
            self._finish_group(group)

    def _finish_group(self, group: list[ShadowJob]) -> None:
        repo = group[0].served.repo
        shadow = group[0].shadow
        batch: dict[str, Output] = {}
        if shadow:
            feeds = {k: np.concatenate([j.feeds[k] for j in group]) for k in group[0].feeds}
            # The served variants' members too, so every output a request produced is recorded; in a
            # batch they cost little more than the members the shadow variants need anyway.
            needed = repo.members_for([*shadow, *{j.served.variant for j in group}])
            outputs = repo.run_members(feeds, needed)
            batch = dict(outputs)
            for name in shadow:
                if name not in batch:
                    batch[name] = repo.evaluate(name, outputs)
        served = [j.served for j in group]
        if not batch:
            self.record_many(served)
            return
        shadow_set = set(shadow)
        roles = {name: "shadow" if name in shadow_set else "member" for name in batch}
        total = sum(s.rows for s in served)
        sink = self._sink()
        for name, role in roles.items():
            sink.predictions[(name, role)].inc(total)
        if all(s.output.labels is not None for s in served):
            # Disagreement with the served answer, once per variant for the whole batch.
            answer = np.concatenate([s.output.labels for s in served if s.output.labels is not None])
            # Fixed-width strings compare in C; an object array compared name by name in Python.
            own = np.repeat(np.array([s.variant for s in served]), [s.rows for s in served])
            for name, out in batch.items():
                if out.labels is None:
                    continue
                mask = own != name
                sink.compared[name].inc(int(mask.sum()))
                sink.disagreement[name].inc(int((out.labels[mask] != answer[mask]).sum()))
        self._record_many(served, {n: (roles[n], o) for n, o in batch.items()})
        recorder = self._recorder()
        if recorder is not None:
            offset = 0
            for s in served:
                extra = {n: slice_output(o, offset, offset + s.rows) for n, o in batch.items()}
                offset += s.rows
                recorder(ShadowResult(served=s, variants={**extra, **s.members, s.variant: s.output}))

    def record(self, served: Served) -> None:
        """Record a request with no shadow work: its answer and the members it ran."""
        self._record_many([served], {n: ("member", o) for n, o in served.members.items()})

    def record_served(self, jobs: list[ShadowJob]) -> None:
        """Record only what was answered (jobs whose shadow work was dropped or failed)."""
        self.record_many([j.served for j in jobs])

    def record_many(self, served: list[Served]) -> None:
        """Record requests with no shadow work: one ledger entry per set of members that ran."""
        by_members: dict[tuple[str, ...], list[Served]] = {}
        for s in served:
            by_members.setdefault(tuple(s.members), []).append(s)
        for names, same in by_members.items():
            if len(same) == 1:
                self.record(same[0])
                continue
            outputs = {n: ("member", concat_outputs([s.members[n] for s in same])) for n in names}
            self._record_many(same, outputs)

    def _record_many(self, served: list[Served], outputs: dict[str, tuple[str, Output]]) -> None:
        ledger = self._ledger()
        if ledger is None:
            return
        repo = served[0].repo
        entry = Entry(
            request_ids=[s.request_id for s in served],
            rows=[s.rows for s in served],
            served=[(s.variant, s.output) for s in served],
            model=repo.manifest.name,
            version=repo.manifest.version,
            created_at=time.time(),
            outputs=outputs,
        )
        if not ledger.record(entry):
            self._sink().dropped["ledger_queue_full"].inc()
