"""The one shape of an answered request, from the request core through recording to the ledger.

The core makes a :class:`Job` when it answers; a recording (threads or evaluator process) finishes it:
runs its shadow variants, counts disagreement, writes its ledger record. Between processes it travels
as a batch of arrays (service/recording/wire.py) and arrives as the same Job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy.typing as npt

from contract.outputs import Output
from service.runtime.repository import LoadedRepository


@dataclass(frozen=True)
class Job:
    """An answered request: the answer, every output computed for it, and the work still owed."""

    request_id: str
    variant: str
    """The variant that answered."""
    role: str
    """champion, challenger, forced (the client named the variant)."""
    rows: int
    output: Output
    """The answer (the served variant's output)."""
    members: dict[str, Output]
    """Every member that ran to answer, by name."""
    repository: str
    """The version folder that answered (how an evaluator process finds the same graphs)."""
    model: str
    version: int
    """The repository's name and version number, as the ledger records them."""
    feeds: Mapping[str, npt.NDArray[Any]]
    """The graph inputs, kept only while shadow work is owed (empty otherwise)."""
    shadow: tuple[str, ...]
    """Shadow variants still to evaluate on these rows."""
    deadline: float
    """time.monotonic() after which the shadow work is late and dropped (the answer is still recorded)."""
    batch: int = 0
    """The worker's batch number this job travelled in to an evaluator process (0 on threads): a batch
    is confirmed back once each of its jobs is committed or counted."""

    def without_shadow(self) -> Job:
        """The same answer with no shadow work owed (shed under load)."""
        return replace(self, feeds={}, shadow=())


@dataclass(frozen=True)
class Finished:
    """Everything evaluated for one request, served and shadow, handed to a recorder."""

    job: Job
    variants: dict[str, Output]
    """Served variant, every shadow variant, and every member that ran."""


Recorder = Callable[[Finished], None]
"""An extra observer of every finished request (tests, experiments); threads only."""
Repositories = Callable[[str], LoadedRepository]
"""The loaded repository of a version folder (a Job names its version by path)."""


class Count(Protocol):
    """Anything that counts up: a prometheus counter child, or the evaluator's plain counter."""

    def inc(self, amount: float = 1.0) -> None: ...


class Counters(Protocol):
    """The counters the finisher increments: the metrics' series of the loaded version (threads), or
    the evaluator process's counts, sent back to the worker after every batch."""

    @property
    def predictions(self) -> Mapping[tuple[str, str], Count]: ...
    @property
    def disagreement(self) -> Mapping[str, Count]: ...
    @property
    def compared(self) -> Mapping[str, Count]: ...
    @property
    def dropped(self) -> Mapping[str, Count]: ...
