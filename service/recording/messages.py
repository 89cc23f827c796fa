"""The messages between a worker and its evaluator process: typed, pickled, in order on one socket.

worker -> evaluator: :class:`Start` (first), then :class:`Jobs`, :class:`Load`, :class:`Barrier` in
any order, and :class:`Stop` last. evaluator -> worker: :class:`Counts` after every batch,
:class:`Done` for each Load and Barrier, :class:`Closed` last. Order is the guarantee: a barrier is
answered after every job sent before it is committed.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy.typing as npt

from service.ledger.store import LedgerHealth
from service.settings import Settings


class JobMeta(NamedTuple):
    """One job of a batch without its arrays: which slices of the batch's arrays are its outputs and
    feeds (-1: absent; SAME_AS_MEMBER for an answer that is the served member's own output)."""

    request_id: str
    variant: str
    role: str
    rows: int
    repository: str
    model: str
    version: int
    served: tuple[int, ...] | int
    members: tuple[tuple[str, tuple[int, ...]], ...]
    feeds: tuple[tuple[str, int], ...]
    shadow: tuple[str, ...]
    deadline: float


@dataclass(frozen=True)
class JobBatch:
    """Answered requests as a few concatenated arrays and one small tuple per request."""

    metas: list[JobMeta]
    arrays: list[npt.NDArray[Any]]
    seq: int = 0
    """The worker's number for this batch; the evaluator confirms it once all its jobs are accounted for."""
    resent: bool = False
    """Sent before to an evaluator that died: some of it may be in the ledger already."""


@dataclass(frozen=True)
class Start:
    """The worker's settings, before anything else."""

    settings: Settings
    journal: str | None = None
    """The worker's crash journal, where the evaluator counts the rows it accounts for."""


@dataclass(frozen=True)
class Jobs:
    """Answered requests to finish and record."""

    batch: JobBatch


@dataclass(frozen=True)
class Load:
    """Load this version folder now (before the worker serves it), then answer Done(token)."""

    token: int
    path: str


@dataclass(frozen=True)
class Barrier:
    """Answer Done(token) once every job sent before this is committed to the ledger."""

    token: int


@dataclass(frozen=True)
class Stop:
    """Record what was sent, flush the ledger, answer Closed and exit."""


@dataclass(frozen=True)
class CountsReport:
    """What the evaluator counted since its last report, to be applied to the worker's metrics."""

    confirmed: list[int] = field(default_factory=list)
    """Batches (JobBatch.seq) whose every job is now committed to the ledger or counted as unrecorded."""
    unrecorded: dict[str, float] = field(default_factory=dict)
    """Answered rows counted as not in the ledger, by reason."""
    ledger: LedgerHealth | None = None
    """The evaluator's ledger writer's state."""
    predictions: dict[tuple[str, str], float] = field(default_factory=dict)
    disagreement: dict[str, float] = field(default_factory=dict)
    compared: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, float] = field(default_factory=dict)
    inference: dict[str, list[float]] = field(default_factory=dict)
    """Graph run times in seconds, per member or meta-model."""


@dataclass(frozen=True)
class Counts:
    """A CountsReport on its way to the worker."""

    report: CountsReport


@dataclass(frozen=True)
class Done:
    """The answer to a Load or Barrier: error is None when it worked."""

    token: int
    error: str | None = None


@dataclass(frozen=True)
class Closed:
    """The evaluator stopped after recording everything it was sent."""


ToEvaluator = Start | Jobs | Load | Barrier | Stop
ToWorker = Counts | Done | Closed


def send(conn: Connection, message: ToEvaluator | ToWorker) -> None:
    """One message, pickled."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> ToEvaluator | ToWorker:
    """The next message (EOFError when the other side is gone)."""
    message: ToEvaluator | ToWorker = pickle.loads(conn.recv_bytes())
    return message
