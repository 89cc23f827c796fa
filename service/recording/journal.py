"""Each worker's crash journal: how many answered rows it still owes the ledger, in a file that outlives
a kill -9.

Three counters in a small memory-mapped file per worker: rows answered (the worker, on the request
path: one store into the page cache, well under a microsecond), rows the worker accounted for itself
(committed by its own ledger writer, or counted as unrecorded), and rows its evaluator process accounted
for (committed, or counted; written by the evaluator, which keeps its count in the same file so that
what it commits after the worker died still counts). The kernel keeps the pages after a process dies,
so the next worker to start finds the journal of a dead one, logs the gap (answered - both accounted)
and counts it (``gateway_unrecorded_rows_total{reason="worker_crashed"}``): the answers still in the
dead worker's send window or ledger queue. A graceful stop accounts for every row and removes its
journal. (Power loss can lose the pages too; that is out of scope.)
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from service import metrics
from service.metric_queue import Series
from service.settings import Settings

log = logging.getLogger(__name__)
LAYOUT = struct.Struct("<qqq")
"""answered rows, rows accounted by the worker, rows accounted by its evaluator"""
ANSWERED, BY_WORKER, BY_EVALUATOR = 0, 8, 16


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None when it does not exist): a pid and
    its start time name one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _map(path: Path, create: bool) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0), 0o644)
    try:
        if create:
            os.ftruncate(fd, LAYOUT.size)
        return mmap.mmap(fd, LAYOUT.size)
    finally:
        os.close(fd)


class Slot:
    """One counter of a journal, owned by one writer (a lock, since a writer may have two threads)."""

    def __init__(self, area: mmap.mmap, offset: int) -> None:
        self._area, self._offset = area, offset
        (self._value,) = struct.unpack_from("<q", area, offset)
        self._lock = threading.Lock()

    def add(self, rows: int) -> None:
        with self._lock:
            self._value += rows
            struct.pack_into("<q", self._area, self._offset, self._value)

    @property
    def value(self) -> int:
        return self._value


class Journal:
    """A worker's journal: it creates the file and writes the first two counters."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self.path = folder / f"worker-{pid}-{_start_ticks(pid)}.journal"
        self._area = _map(self.path, create=True)
        self.answered = Slot(self._area, ANSWERED)
        self.accounted = Slot(self._area, BY_WORKER)

    @property
    def owed(self) -> int:
        answered, by_worker, by_evaluator = LAYOUT.unpack_from(self._area)
        return int(answered - by_worker - by_evaluator)

    def close(self) -> None:
        """Graceful stop: remove the file once everything answered is accounted for."""
        owed = self.owed
        self._area.close()
        if owed <= 0:
            self.path.unlink(missing_ok=True)
        else:
            log.error(
                "stopping with %d answered rows neither committed nor counted: journal kept at %s",
                owed,
                self.path,
            )


def evaluator_slot(path: Path) -> Slot:
    """The evaluator's counter in its worker's journal (the file exists: the worker made it)."""
    return Slot(_map(path, create=False), BY_EVALUATOR)


@dataclass(frozen=True)
class Gap:
    """Rows a dead worker answered and never saw committed or counted."""

    pid: int
    rows: int


def reclaim(folder: Path) -> list[Gap]:
    """The journals of workers that are gone, claimed (by rename, so two starting workers never both
    count one), read and removed."""
    gaps: list[Gap] = []
    if not folder.is_dir():
        return gaps
    for path in sorted(folder.glob("worker-*.journal")):
        _, pid_text, ticks = path.stem.split("-", 2)
        pid = int(pid_text)
        if _start_ticks(pid) == ticks:
            continue  # still running
        claimed = path.with_suffix(f".claimed-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue  # another worker claimed it first
        data = claimed.read_bytes()
        claimed.unlink(missing_ok=True)
        if len(data) < LAYOUT.size:
            continue
        answered, by_worker, by_evaluator = LAYOUT.unpack_from(data)
        if answered > by_worker + by_evaluator:
            gaps.append(Gap(pid, answered - by_worker - by_evaluator))
    return gaps


class RowAccounting:
    """The rows the ledger owes this worker, for either recording: the journal, the gap a dead worker
    left (reclaimed at start), and every row counted as unrecorded. A no-op when the ledger is off."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.ledger_enabled
        self.folder = settings.journal_dir or settings.ledger_path.parent / ".journal"
        self.journal: Journal | None = None

    def start(self) -> None:
        """Open this worker's journal (once), after counting what dead workers left unaccounted."""
        if not self.enabled or self.journal is not None:
            return
        for gap in reclaim(self.folder):
            log.error(
                "ledger gap: worker %d died with %d answered rows neither committed nor counted; counted as "
                'gateway_unrecorded_rows_total{reason="worker_crashed"}',
                gap.pid,
                gap.rows,
            )
            metrics.UNRECORDED_ROWS.labels("worker_crashed").inc(gap.rows)
        self.journal = Journal(self.folder)

    @property
    def path(self) -> Path | None:
        return self.journal.path if self.journal is not None else None

    def answered(self, rows: int) -> None:
        if self.journal is not None:
            self.journal.answered.add(rows)

    def accounted(self, rows: int) -> None:
        if self.journal is not None:
            self.journal.accounted.add(rows)

    def committed(self, rows: int, inserted: int, series: Series) -> None:
        """An entry of ``rows`` committed, ``inserted`` of them new: the others belong to request ids
        already in the ledger (a client retry), which keep their first record; counted as such."""
        if rows > inserted:
            series.unrecorded["duplicate_id"].inc(rows - inserted)
        self.accounted(rows)

    def unrecorded(self, reason: str, jobs: int, rows: int, series: Series) -> None:
        """Answered rows that will not reach the ledger: counted, and accounted for."""
        series.dropped[reason].inc(jobs)
        if self.enabled:
            series.unrecorded[reason].inc(rows)
        self.accounted(rows)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
