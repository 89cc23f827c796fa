"""The prediction ledger: every member's and variant's prediction under its request id, and labels.

SQLite in WAL mode by default; the SQL is plain (no SQLite-only types) so a shared database can take
its place for several replicas. Predictions are written by one background thread from a bounded
queue, in batches, every ``flush_interval_s``: a graceful stop flushes everything, a ``kill -9`` loses
at most the last interval. Labels are written synchronously before /feedback answers, so an
acknowledged label is never lost. Unlabelled predictions older than ``retention_s`` are deleted, and
so are the oldest ones beyond ``max_unlabelled_rows``, so the file stays bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from contract.outputs import Output
from service.ledger.schema import ROLE_CODES, connect, transaction
from service.settings import Settings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Entry:
    """Outputs of one or more requests to record.

    ``outputs`` holds batch outputs over all the entry's rows (request after request, in order) with
    the role every request gave that variant; ``served`` holds, per request, the variant that
    answered and its answer, which is recorded with the role "served" for that request's rows.
    """

    request_ids: list[str]
    rows: list[int]
    served: list[tuple[str, Output]]
    model: str
    version: int
    created_at: float
    outputs: dict[str, tuple[str, Output]]


def _columns(out: Output) -> tuple[list[Any], list[float]]:
    """(class indices or Nones, scores): P(class 1) for binary, max P for multiclass, the value for
    regression."""
    if out.values is not None:
        return [None] * len(out.values), out.values.tolist()
    assert out.labels is not None and out.proba is not None
    scores = out.proba[:, 1] if out.proba.shape[1] == 2 else np.max(out.proba, axis=1)
    return out.labels.tolist(), scores.tolist()


def entry_rows(entry: Entry) -> list[tuple[Any, ...]]:
    """One SQL row per request row; ``outputs`` maps every variant that predicted it to
    [class index or null, score, role code]. One row instead of one per variant keeps the write cost
    flat as candidates are added."""
    columns = [(v, *_columns(out), ROLE_CODES[role]) for v, (role, out) in entry.outputs.items()]
    served_code = ROLE_CODES["served"]
    rows: list[tuple[Any, ...]] = []
    offset = 0
    for rid, n, (served, answer) in zip(entry.request_ids, entry.rows, entry.served, strict=True):
        s_labels, s_scores = _columns(answer)
        for i in range(n):
            k = offset + i
            doc = {v: [labels[k], scores[k], code] for v, labels, scores, code in columns if v != served}
            doc[served] = [s_labels[i], s_scores[i], served_code]
            rows.append(
                (rid, i, entry.model, entry.version, served, entry.created_at, orjson.dumps(doc).decode())
            )
        offset += n
    return rows


class Ledger:
    """Background writer of predictions; synchronous label joins live in service/feedback.py."""

    def __init__(
        self,
        path: Path,
        flush_interval_s: float = 0.1,
        max_queue: int = 100_000,
        retention_s: float = 7 * 86400,
        max_unlabelled_rows: int = 5_000_000,
        cleanup_interval_s: float = 60.0,
    ) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self.cleanup_interval_s = cleanup_interval_s
        self.retention_s = retention_s
        self.max_unlabelled_rows = max_unlabelled_rows
        self._queue: queue.Queue[Entry | None] = queue.Queue(maxsize=max_queue)
        self._conn = connect(path)
        self._flush_requests: queue.Queue[threading.Event] = queue.Queue()
        self.dropped = 0
        self.written_rows = 0
        self._last_cleanup = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gateway-ledger", daemon=True)
        self._stopped = False
        self._thread.start()

    def record(self, entry: Entry) -> bool:
        """Queue an entry without ever blocking the caller (the event loop serves every request): when
        the queue is full, i.e. the writer has been stalled for ``max_queue`` entries, the entry is
        dropped and counted (False)."""
        try:
            self._queue.put_nowait(entry)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything queued so far; True once it is committed."""
        if self._stopped:
            return True
        done = threading.Event()
        self._flush_requests.put(done)
        return done.wait(timeout_s)

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

    def _write(self, entries: list[Entry]) -> None:
        if not entries:
            return
        rows = [r for e in entries for r in entry_rows(e)]
        with transaction(self._conn) as c:
            # A request id seen twice (a client retry) keeps its first record.
            c.executemany("INSERT OR IGNORE INTO predictions VALUES (?,?,?,?,?,?,?)", rows)
        self.written_rows += len(rows)

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
                self._write(self._drain())
                if time.monotonic() - self._last_cleanup > self.cleanup_interval_s:
                    self.cleanup()
            except Exception:  # keep the writer alive; the entries of this batch are logged as lost
                log.exception("ledger write failed")
            for w in waiters:
                w.set()
        try:
            self._write(self._drain())
        finally:
            while not self._flush_requests.empty():
                self._flush_requests.get().set()

    def cleanup(self, now: float | None = None) -> int:
        """Delete unlabelled predictions past retention or beyond the row cap; returns rows deleted.

        The age rule uses the created_at index; the cap is checked against a plain row count first,
        outside any write lock, so the usual case costs one index scan and holds no lock."""
        self._last_cleanup = time.monotonic()
        cutoff = (now or time.time()) - self.retention_s
        unlabelled = (
            "NOT EXISTS (SELECT 1 FROM labels l WHERE l.request_id = predictions.request_id "
            "AND l.row_index = predictions.row_index)"
        )
        with transaction(self._conn) as c:
            deleted = c.execute(
                f"DELETE FROM predictions WHERE created_at < ? AND {unlabelled}", (cutoff,)
            ).rowcount
        (total,) = self._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
        if total <= self.max_unlabelled_rows:
            return int(deleted)
        with transaction(self._conn) as c:
            (count,) = c.execute(f"SELECT COUNT(*) FROM predictions WHERE {unlabelled}").fetchone()
            excess = count - self.max_unlabelled_rows
            if excess > 0:
                deleted += c.execute(
                    f"DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions WHERE {unlabelled} "
                    "ORDER BY created_at LIMIT ?)",
                    (excess,),
                ).rowcount
        return int(deleted)

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
        self._conn.close()


def open_ledger(settings: Settings) -> Ledger | None:
    """The ledger writer these settings describe; None when the ledger is disabled."""
    if not settings.ledger_enabled:
        return None
    return Ledger(
        settings.ledger_path,
        settings.ledger_flush_interval_s,
        max_queue=settings.record_queue,
        retention_s=settings.ledger_retention_s,
        max_unlabelled_rows=settings.ledger_max_unlabelled_rows,
        cleanup_interval_s=settings.ledger_cleanup_interval_s,
    )
