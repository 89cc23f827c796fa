"""The prediction ledger's writer: a system of record for every answered row.

SQLite in WAL mode, or a PostgreSQL database shared by replicas (service/ledger/database.py); one
background thread writes queued entries in one transaction every
``flush_interval_s`` (a graceful stop flushes everything). Every entry ends in exactly one of two
ways, reported through callbacks: committed (``on_commit(entry, inserted rows)``: rows of a request
id already in the ledger are kept as first written, and the caller counts them), or counted as
unrecorded with a reason (``on_unrecorded``): the queue was full, or writes kept failing (disk full, read-only file, locked
database, I/O error) beyond ``retry_rows`` rows waiting. A failed write is retried with back-off;
meanwhile :meth:`Ledger.health` says the ledger is degraded and why. Before every write the writer
checks that the file it holds is still the file at its path: a deleted or replaced file is noticed,
logged and reopened (a new file gets the schema), instead of writing on into an unlinked inode.
Unlabelled predictions past retention or a row cap are deleted (service/ledger/retention.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.ledger.database import Database, database_errors, failure_reason
from service.ledger.entries import Entry, entry_rows
from service.ledger.retention import cleanup
from service.settings import Settings

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0
INSERT_PREDICTION = (
    "INSERT INTO predictions (request_id, row_index, model, version, served, created_at, outputs) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True)
class LedgerHealth:
    """The writer's state, for /health and the metrics."""

    state: str
    """ok, or degraded (writes are failing and being retried)."""
    reason: str = ""
    """Why it is degraded: ledger_full, ledger_read_only, ledger_locked, ledger_io_error, ledger_error."""
    since: float | None = None
    """time.time() of the first failure of the current degraded spell."""
    pending_rows: int = 0
    """Rows waiting to be written (queued and being retried)."""
    reopened: int = 0
    """Times the ledger file was found deleted or replaced and reopened."""


class Ledger:
    """Background writer of predictions; synchronous label joins live in service/ledger/feedback.py."""

    def __init__(
        self,
        path: Path | str,
        flush_interval_s: float = 0.1,
        max_queue: int = 100_000,
        retention_s: float = 7 * 86400,
        max_unlabelled_rows: int = 5_000_000,
        cleanup_interval_s: float = 60.0,
        retry_rows: int = 200_000,
        on_commit: Callable[[Entry, int], None] = lambda _e, _n: None,
        on_unrecorded: Callable[[str, Entry], None] = lambda _r, _e: None,
        max_bytes: int | None = None,
    ) -> None:
        self.flush_interval_s = flush_interval_s
        self.cleanup_interval_s = cleanup_interval_s
        self.retention_s = retention_s
        self.max_unlabelled_rows = max_unlabelled_rows
        self.retry_rows = retry_rows
        self._on_commit = on_commit
        self._on_unrecorded = on_unrecorded
        self._queue: queue.Queue[Entry | None] = queue.Queue(maxsize=max_queue)
        self._db = Database(path, max_bytes, lazy=True)
        self.path = self._db.display
        self._errors = database_errors()
        self._flush_requests: queue.Queue[threading.Event] = queue.Queue()
        self._retrying: list[Entry] = []
        self._health = LedgerHealth("ok")
        self._next_try = 0.0
        self._failures = 0
        self.written_rows = 0
        self._last_cleanup = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gateway-ledger", daemon=True)
        self._stopped = False
        self._thread.start()

    # --- callers -------------------------------------------------------------------------------
    def record(self, entry: Entry) -> bool:
        """Queue an entry without ever blocking the caller (the event loop serves every request): when
        the queue is full, i.e. the writer has been stalled for ``max_queue`` entries, the entry is
        counted as unrecorded (ledger_queue_full) and False returned."""
        try:
            self._queue.put_nowait(entry)
            return True
        except queue.Full:
            self._on_unrecorded("ledger_queue_full", entry)
            return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything queued so far; True once it is committed (False when writes are failing:
        the rows stay queued for another try, or are counted)."""
        if self._stopped:
            return not self._retrying
        done = threading.Event()
        self._flush_requests.put(done)
        return done.wait(timeout_s) and not self._retrying

    def health(self) -> LedgerHealth:
        h = self._health
        waiting = [*list(self._queue.queue), *self._retrying]
        pending = sum(e.row_count for e in waiting if e is not None)
        return LedgerHealth(h.state, h.reason, h.since, pending, self._db.reopened)

    # --- the writer ----------------------------------------------------------------------------
    def _drain(self) -> list[Entry]:
        entries: list[Entry] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return entries
            if item is None:
                self._stopped = True
                continue
            entries.append(item)

    def _write(self, entries: list[Entry]) -> list[int]:
        """All entries in one transaction; the rows each one inserted."""
        self._db.check()
        inserted = []
        with self._db.transaction() as db:
            for e in entries:
                # A request id seen twice (a client retry, a batch sent again after an evaluator
                # crash, or two replicas given the same id) keeps its first record.
                cur = db.executemany(INSERT_PREDICTION, entry_rows(e))
                inserted.append(max(cur.rowcount, 0))
        self.written_rows += sum(inserted)
        return inserted

    def _attempt(self, force: bool = False) -> None:
        """Write what waits (retried entries first, in order); on failure keep it for another try, and
        count the oldest beyond ``retry_rows`` as unrecorded."""
        self._retrying.extend(self._drain())
        if not self._retrying or (not force and time.monotonic() < self._next_try):
            return
        batch, self._retrying = self._retrying, []
        try:
            inserted = self._write(batch)
        except self._errors as exc:
            self._failed(batch, exc)
            return
        if self._health.state != "ok":
            log.warning(
                "ledger %s writes again after %s; %d rows written late",
                self.path,
                self._health.reason,
                sum(e.row_count for e in batch),
            )
        self._health = LedgerHealth("ok")
        self._failures = 0
        for e, n in zip(batch, inserted, strict=True):
            self._on_commit(e, n)

    def _failed(self, batch: list[Entry], exc: BaseException) -> None:
        reason = failure_reason(exc)
        if self._failures == 0:
            log.error(
                "ledger %s: write failed (%s: %s); retrying, rows kept in memory", self.path, reason, exc
            )
        self._failures += 1
        self._next_try = time.monotonic() + min(MAX_BACKOFF_S, self.flush_interval_s * 2**self._failures)
        h = self._health
        self._health = LedgerHealth("degraded", reason, h.since or time.time())
        waiting = sum(e.row_count for e in batch)
        while batch and waiting > self.retry_rows:
            oldest = batch.pop(0)
            waiting -= oldest.row_count
            self._on_unrecorded(reason, oldest)
        self._retrying = batch + self._retrying

    def _run(self) -> None:
        while not self._stopped:
            deadline = time.monotonic() + self.flush_interval_s
            waiters: list[threading.Event] = []
            while time.monotonic() < deadline and not self._stopped:
                try:
                    waiters.append(self._flush_requests.get(timeout=max(deadline - time.monotonic(), 0.001)))
                    break  # a flush request cuts the interval short
                except queue.Empty:
                    continue
            try:
                self._attempt(force=bool(waiters))
                if time.monotonic() - self._last_cleanup > self.cleanup_interval_s and not self._retrying:
                    try:
                        self.cleanup()
                    except self._errors as exc:  # retention waits for the next interval
                        log.warning(
                            "ledger %s: retention failed (%s: %s)", self.path, failure_reason(exc), exc
                        )
            except Exception:  # a bug must not stop the writer; its entries stay queued
                log.exception("ledger writer failed")
            for w in waiters:
                w.set()
        self._final()

    def _final(self) -> None:
        """At the stop: one more try for everything; what still fails is counted, never dropped silently."""
        try:
            self._attempt(force=True)
        finally:
            for entry in self._retrying:
                self._on_unrecorded(self._health.reason or "ledger_error", entry)
            self._retrying = []
            while not self._flush_requests.empty():
                self._flush_requests.get().set()

    def cleanup(self, now: float | None = None) -> int:
        """Apply retention and the row cap now; returns rows deleted."""
        self._last_cleanup = time.monotonic()
        self._db.check()
        return cleanup(self._db, self.retention_s, self.max_unlabelled_rows, now)

    def close(self) -> None:
        """Flush everything and stop the writer (graceful stop)."""
        if not self._thread.is_alive():
            return
        # Wake the writer now (not at the end of its interval): it drains the queue, which makes room
        # for the stop marker even when the queue was full; wake it again to see the marker.
        self._flush_requests.put(threading.Event())
        self._queue.put(None)
        self._flush_requests.put(threading.Event())
        self._thread.join(timeout=30)
        self._db.close()


def open_ledger(
    settings: Settings,
    on_commit: Callable[[Entry, int], None] = lambda _e, _n: None,
    on_unrecorded: Callable[[str, Entry], None] = lambda _r, _e: None,
) -> Ledger | None:
    """The ledger writer these settings describe; None when the ledger is disabled."""
    if not settings.ledger_enabled:
        return None
    return Ledger(
        settings.ledger_target,
        settings.ledger_flush_interval_s,
        max_queue=settings.record_queue,
        retention_s=settings.ledger_retention_s,
        max_unlabelled_rows=settings.ledger_max_unlabelled_rows,
        cleanup_interval_s=settings.ledger_cleanup_interval_s,
        retry_rows=settings.ledger_retry_rows,
        on_commit=on_commit,
        on_unrecorded=on_unrecorded,
        max_bytes=settings.ledger_max_bytes,
    )
