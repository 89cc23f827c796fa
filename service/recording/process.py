"""Recording in an evaluator process beside each worker: the worker's side.

On threads of the worker, the shadow variants' and the ledger's Python work takes the interpreter lock
from the event loop, in slices of up to 5 ms. Here the request path only appends the answered request
to a deque; a sender thread ships what gathered every ``shadow_gather_s`` as one compact batch
(service/recording/wire.py) over a socket pair to service/recording/evaluator.py, which runs the shadow
members, records everything in the ledger and sends its counts back to be applied to this worker's
metrics. Measured side by side against threads (benchmarks/BENCHMARKS.md, `benchmarks/sidebyside.py`):
single rows even or slightly ahead (2,408 -> 2,479 req/s over 8 rounds, max 28 -> 24 ms), 64-row
batches p99 98 -> 36 ms and max 262 -> 142 ms at equal throughput, ~85 MB more per worker. Pickling
each request's arrays instead (22 µs a request on the sender) had cost 9% of throughput.

Nothing answered is lost silently. Each shipped batch stays in memory until the evaluator confirms
that its every job is committed to the ledger or counted as unrecorded; when the evaluator dies, a new
one is started and every unconfirmed batch is sent again (the ledger keeps the first record of a
request id, so a batch committed just before the crash is not written twice); a batch the evaluator
died on twice is counted as ``evaluator_lost``. A full queue drops shadow work first (the answer is
still recorded) and counts both. :meth:`ProcessRecording.barrier` returns once everything submitted
before it is committed, which is what /feedback and /compare wait for. What a killed *worker* still
held is counted at the next start from its journal (service/recording/journal.py).
"""

from __future__ import annotations

import collections
import itertools
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from service import metrics
from service.ledger.store import LedgerHealth
from service.metric_queue import Series
from service.recording.child import Child, start_evaluator
from service.recording.counts import apply_counts
from service.recording.jobs import Job
from service.recording.journal import RowAccounting
from service.recording.messages import (
    Barrier,
    Closed,
    Counts,
    Done,
    Jobs,
    Load,
    Stop,
    ToEvaluator,
    receive,
    send,
)
from service.recording.wire import encode
from service.runtime.repository import LoadedRepository
from service.settings import Settings

log = logging.getLogger(__name__)


class _Control:
    """A message for the evaluator in the job stream, and the wait for its answer."""

    def __init__(self, message: Load | Barrier | Stop) -> None:
        self.message = message
        self.ok = False
        self.error: str | None = None
        self.event = threading.Event()

    def finish(self, ok: bool, error: str | None = None) -> None:
        self.ok, self.error = ok, error
        self.event.set()

    def wait(self, timeout_s: float) -> bool:
        return self.event.wait(timeout_s) and self.ok


@dataclass
class _Resend:
    """An unconfirmed batch on its way to a new evaluator, and how many evaluators it has outlived."""

    jobs: list[Job]
    attempts: int


MAX_ATTEMPTS = 3
"""A batch sent to this many evaluators that all died is counted as lost (it may be what kills them)."""


class ProcessRecording:
    """The Recording protocol over an evaluator process: a bounded deque, a sender thread, the
    process and a reader of its answers."""

    def __init__(self, settings: Settings, series: Callable[[], Series]) -> None:
        self.settings = settings
        self._series = series
        self._pending: collections.deque[Job | _Control | _Resend] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._child: Child | None = None
        self._last_start = -settings.evaluator_restart_backoff_s
        self._tokens = itertools.count(1)
        self._waiters: dict[int, _Control] = {}
        self._stopping = False
        self._seq = itertools.count(1)
        self._inflight: dict[int, _Resend] = {}
        """Batches sent and not yet confirmed, by number (guarded by _lock)."""
        self._inflight_jobs = 0
        self.rows = RowAccounting(settings)
        self._ledger_health: LedgerHealth | None = None

    # --- the request path ------------------------------------------------------------------------
    def submit(self, job: Job) -> bool:
        """Queue an answered request; never blocks. Shadow work is shed first when the evaluator
        falls behind (the answer is still recorded); False when even the record cannot be kept."""
        if not job.shadow and not self.settings.ledger_enabled:
            return True  # nothing owed: no shadow work, nothing to record
        if self._thread is None:
            self._ensure_thread()
        self.rows.answered(job.rows)
        waiting = len(self._pending) + self._inflight_jobs
        if waiting >= self.settings.record_queue:
            self.rows.unrecorded("ledger_queue_full", 1, job.rows, self._series())
            return False
        if job.shadow and waiting >= self.settings.shadow_queue:
            self._drop("shadow_queue_full", 1)
            job = job.without_shadow()
        self._pending.append(job)
        return True

    # --- waits -----------------------------------------------------------------------------------
    def barrier(self, timeout_s: float = 10.0) -> bool:
        """True once everything submitted before this call is recorded and committed."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            control = self._submit_control(Barrier(next(self._tokens)), max(deadline - time.monotonic(), 0.0))
            if control.ok:
                return True
            if not control.error or time.monotonic() >= deadline:
                if control.error:
                    log.error("evaluator: Barrier failed: %s", control.error)
                return False
            # The evaluator died under the barrier: its successor is sent the unconfirmed jobs first,
            # so a new barrier behind them means the same.
            time.sleep(0.05)

    def prepare(self, repo: LoadedRepository, timeout_s: float = 120.0) -> bool:
        """Have the evaluator load a version before it is served (no drops at a swap); open the crash
        journal on the first load."""
        self.rows.start()
        self._ensure_thread()
        return self._control(Load(next(self._tokens), str(repo.path)), timeout_s)

    def _control(self, message: Load | Barrier, timeout_s: float) -> bool:
        control = self._submit_control(message, timeout_s)
        if control.error:
            log.error("evaluator: %s failed: %s", type(message).__name__, control.error)
        return control.ok

    def _submit_control(self, message: Load | Barrier, timeout_s: float) -> _Control:
        control = _Control(message)
        self._pending.append(control)
        self._wake.set()
        control.ok = control.wait(timeout_s)
        return control

    # --- the sender ------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        # Started on first use, so importing the service (bentoml build) starts nothing.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_forever, name="gateway-offload", daemon=True
                )
                self._thread.start()

    def _send_forever(self) -> None:
        while True:
            # Gathering for a while makes one message (and one onnxruntime run per member) of many
            # requests; barriers and the stop wake the thread at once.
            self._wake.wait(self.settings.shadow_gather_s)
            self._wake.clear()
            items = []
            while self._pending:
                items.append(self._pending.popleft())
            if items:
                try:
                    self._deliver(items)
                except Exception:  # a bug here must not stop every later answer from being recorded
                    log.exception("shipping %d items to the evaluator failed", len(items))
                    jobs = [i for i in items if isinstance(i, Job)]
                    jobs += [j for i in items if isinstance(i, _Resend) for j in i.jobs]
                    self._lost(jobs)
                    for item in items:
                        if isinstance(item, _Control):
                            item.finish(False, "shipping to the evaluator failed")
            if self._stopping and not self._pending:
                return

    def _deliver(self, items: list[Job | _Control | _Resend]) -> None:
        jobs: list[Job] = []
        for item in items:
            if isinstance(item, Job):
                jobs.append(item)
                continue
            self._send_jobs(jobs)
            jobs = []
            if isinstance(item, _Resend):
                self._send_jobs(item.jobs, item.attempts)
            else:
                self._send_control(item)
        self._send_jobs(jobs)

    def _send_jobs(self, jobs: list[Job], attempts: int = 0) -> None:
        if not jobs:
            return
        child = self._live_child()
        if child is None:  # no evaluator can start now: keep them for the next try (bounded by submit)
            self._pending.appendleft(_Resend(jobs, attempts))
            return
        seq = next(self._seq)
        with self._lock:
            self._inflight[seq] = _Resend(jobs, attempts + 1)
            self._inflight_jobs += len(jobs)
        try:
            send(child.conn, Jobs(encode(jobs, seq, resent=attempts > 0)))
        except OSError:
            self._lose(child)

    def _send_control(self, control: _Control) -> None:
        message = control.message
        if isinstance(message, Stop):
            child = self._child
            if child is not None:
                self._send(child, message)
            return
        child = self._live_child()
        if child is None:
            control.finish(False, "the evaluator process is not running")
            return
        with self._lock:
            self._waiters[message.token] = control
        self._send(child, message)

    def _send(self, child: Child, message: ToEvaluator) -> None:
        try:
            send(child.conn, message)
        except OSError:
            self._lose(child)

    # --- the process -----------------------------------------------------------------------------
    def _live_child(self) -> Child | None:
        child = self._child
        if child is not None and not child.lost:
            return child
        if self._stopping:
            return None
        wait = self._last_start + self.settings.evaluator_restart_backoff_s - time.monotonic()
        if wait > 0:  # a crash loop must not spin: queued work waits (bounded) meanwhile
            time.sleep(wait)
        self._last_start = time.monotonic()
        try:
            child = self._start()
        except Exception:
            log.exception("cannot start the evaluator process")
            return None
        self._child = child
        return child

    def _start(self) -> Child:
        child = start_evaluator(self.settings, self.rows.path)
        child.reader = threading.Thread(
            target=self._read_forever, args=(child,), name="gateway-offload-reader", daemon=True
        )
        child.reader.start()
        log.info("evaluator process %d started", child.proc.pid)
        return child

    def _read_forever(self, child: Child) -> None:
        while True:
            try:
                message = receive(child.conn)
            except (EOFError, OSError):
                break
            if isinstance(message, Counts):
                self._confirmed(message.report.confirmed)
                self._ledger_health = message.report.ledger
                try:
                    apply_counts(message.report, self._series())
                except Exception:  # a metric bug must not stop the reader
                    log.exception("applying the evaluator's counts failed")
            elif isinstance(message, Done):
                with self._lock:
                    control = self._waiters.pop(message.token, None)
                if control is not None:
                    control.finish(message.error is None, message.error)
            elif isinstance(message, Closed):
                child.closed = True
                break
        if not child.closed:
            self._lose(child)

    def _confirmed(self, seqs: list[int]) -> None:
        """Confirmed batches leave memory (the evaluator counted their rows in this worker's journal)."""
        with self._lock:
            for seq in seqs:
                batch = self._inflight.pop(seq, None)
                if batch is not None:
                    self._inflight_jobs -= len(batch.jobs)

    def _lose(self, child: Child) -> None:
        """The evaluator died: send its unconfirmed batches again (to a new one), except those that
        outlived MAX_ATTEMPTS evaluators (counted lost); fail the waits."""
        with self._lock:
            if child.lost:
                return
            child.lost = True
            if self._child is child:
                self._child = None
            waiters, self._waiters = self._waiters, {}
            unconfirmed, self._inflight = list(self._inflight.values()), {}
            self._inflight_jobs = 0
        again = [b for b in unconfirmed if b.attempts < MAX_ATTEMPTS]
        self._lost([j for b in unconfirmed if b.attempts >= MAX_ATTEMPTS for j in b.jobs])
        for batch in reversed(again):
            self._pending.appendleft(batch)
        if again:
            self._wake.set()
        for control in waiters.values():
            control.finish(False, "the evaluator process exited")
        code = child.proc.poll()
        if code is None:
            child.proc.kill()
            code = child.proc.wait()
        log.error(
            "evaluator process %d exited with %s; %d unconfirmed jobs sent again",
            child.proc.pid,
            code,
            sum(len(b.jobs) for b in again),
        )
        child.conn.close()

    def _drop(self, reason: str, n: int) -> None:
        metrics.DROPPED.labels(reason).inc(n)

    def _lost(self, jobs: list[Job]) -> None:
        if jobs:
            self.rows.unrecorded("evaluator_lost", len(jobs), sum(j.rows for j in jobs), self._series())

    def health(self) -> dict[str, object]:
        with self._lock:
            inflight = len(self._inflight)
        ledger = self._ledger_health
        return {
            "recording": "evaluator process",
            "evaluator_pid": self.pid,
            "unconfirmed_batches": inflight,
            "queued": len(self._pending),
            "ledger": asdict(ledger) if ledger is not None else None,
        }

    @property
    def pid(self) -> int | None:
        """The evaluator's process id (tests, diagnostics)."""
        child = self._child
        return None if child is None else child.proc.pid

    def close(self, timeout_s: float = 30.0) -> None:
        """Ship everything queued, let the evaluator record it and flush the ledger, then stop it."""
        if self._thread is None:
            return
        self._stopping = True
        self._pending.append(_Control(Stop()))
        self._wake.set()
        self._thread.join(timeout_s)
        child = self._child
        if child is None:
            return
        try:
            child.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("evaluator process %d did not stop in %.0f s: killed", child.proc.pid, timeout_s)
            child.proc.kill()
            child.proc.wait()
        if child.reader is not None:
            child.reader.join(timeout_s)
        self.rows.close()
