"""What happens to a request after it is answered: its shadow variants, its counts and its record.

A :class:`Finisher` does this work for batches of answered requests, on a thread of the worker
(service/recording/threads.py) or in the evaluator process (service/recording/evaluator.py). Jobs of
the same version and shadow set share one run of each member over all their rows; results are
identical row by row to evaluating each request alone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from contract.outputs import Output, concat_outputs, slice_output
from service.ledger.entries import Entry
from service.ledger.store import Ledger
from service.recording.jobs import Counters, Finished, Job, Recorder, Repositories

log = logging.getLogger(__name__)


class Finisher:
    """Shadow evaluation, disagreement counts and ledger records for batches of answered requests.

    Counters, ledger and recorder are read through callables, so a reload (new metric series) or a
    recorder set later takes effect on the next batch."""

    def __init__(
        self,
        counters: Callable[[], Counters],
        ledger: Callable[[], Ledger | None],
        repositories: Repositories,
        recorder: Callable[[], Recorder | None] = lambda: None,
    ) -> None:
        self._counters = counters
        self._ledger = ledger
        self._repositories = repositories
        self._recorder = recorder

    def settle(self, fresh: list[Job], late: list[Job]) -> None:
        """Everything a batch of answered requests gets: shadow work for the fresh ones; for the late
        ones (past their deadline), and for all of them when the shadow work fails, only the record
        of what was answered, with the shadow work counted as dropped."""
        counters = self._counters()
        if late:
            counters.dropped["shadow_timeout"].inc(sum(1 for j in late if j.shadow))
            self.record_answers(late)
        try:
            self.finish(fresh)
        except Exception:  # a failing variant (or a version that vanished) must not lose the answers
            log.exception("shadow batch of %d jobs failed", len(fresh))
            counters.dropped["shadow_failed"].inc(sum(1 for j in fresh if j.shadow))
            self.record_answers(fresh)

    def finish(self, jobs: list[Job]) -> None:
        """Shadow work and records for many requests at once."""
        groups: dict[tuple[str, tuple[str, ...]], list[Job]] = {}
        plain: list[Job] = []
        for job in jobs:
            if job.shadow:
                groups.setdefault((job.repository, job.shadow), []).append(job)
            else:
                plain.append(job)
        self.record_answers(plain)
        for group in groups.values():
            self._finish_group(group)

    def _finish_group(self, group: list[Job]) -> None:
        batch = self._shadow_outputs(group)
        shadow = set(group[0].shadow)
        roles = {name: "shadow" if name in shadow else "member" for name in batch}
        total = sum(j.rows for j in group)
        counters = self._counters()
        for name, role in roles.items():
            counters.predictions[(name, role)].inc(total)
        if all(j.output.labels is not None for j in group):
            # Disagreement with the served answer, once per variant for the whole batch.
            answer = np.concatenate([j.output.labels for j in group if j.output.labels is not None])
            # Fixed-width strings compare in C; an object array compared name by name in Python.
            own = np.repeat(np.array([j.variant for j in group]), [j.rows for j in group])
            for name, out in batch.items():
                if out.labels is None:
                    continue
                mask = own != name
                counters.compared[name].inc(int(mask.sum()))
                counters.disagreement[name].inc(int((out.labels[mask] != answer[mask]).sum()))
        self._write(group, {n: (roles[n], o) for n, o in batch.items()})
        recorder = self._recorder()
        if recorder is not None:
            offset = 0
            for j in group:
                extra = {n: slice_output(o, offset, offset + j.rows) for n, o in batch.items()}
                offset += j.rows
                recorder(Finished(job=j, variants={**extra, **j.members, j.variant: j.output}))

    def _shadow_outputs(self, group: list[Job]) -> dict[str, Output]:
        """Every member and shadow variant over the group's rows, in one run each."""
        repo = self._repositories(group[0].repository)
        feeds = {k: np.concatenate([j.feeds[k] for j in group]) for k in group[0].feeds}
        # The served variants' members too, so every output a request produced is recorded; in a
        # batch they cost little more than the members the shadow variants need anyway.
        needed = repo.members_for([*group[0].shadow, *{j.variant for j in group}])
        outputs = repo.run_members(feeds, needed)
        batch = dict(outputs)
        for name in group[0].shadow:
            if name not in batch:
                batch[name] = repo.evaluate(name, outputs)
        return batch

    def record_answers(self, jobs: list[Job]) -> None:
        """Record what was answered and the members that ran: one ledger entry per version and set of
        members (no shadow work: dropped, failed, or none owed)."""
        groups: dict[tuple[str, int, tuple[str, ...]], list[Job]] = {}
        for j in jobs:
            groups.setdefault((j.model, j.version, tuple(j.members)), []).append(j)
        for (_, _, names), same in groups.items():
            if len(same) == 1:
                outputs = {n: ("member", o) for n, o in same[0].members.items()}
            else:
                outputs = {n: ("member", concat_outputs([j.members[n] for j in same])) for n in names}
            self._write(same, outputs)

    def _write(self, jobs: list[Job], outputs: dict[str, tuple[str, Output]]) -> None:
        ledger = self._ledger()
        if ledger is None:
            return
        entry = Entry(
            request_ids=[j.request_id for j in jobs],
            rows=[j.rows for j in jobs],
            served=[(j.variant, j.output) for j in jobs],
            model=jobs[0].model,
            version=jobs[0].version,
            created_at=time.time(),
            outputs=outputs,
            batches=Counter(j.batch for j in jobs),
        )
        ledger.record(entry)  # a full queue is counted by the ledger's on_unrecorded
