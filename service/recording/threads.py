"""Recording on threads of the worker: a bounded queue, one shadow thread, batches; the ledger's own
writer thread.

The worker takes every job waiting (up to ``max_batch``) and hands them to the handler together:
an onnxruntime run costs about the same for 1 row as for 64, so batching the shadow members of many
requests makes scoring every candidate nearly free under load. onnxruntime releases the GIL while it
runs, so this thread does not hold up the event loop. A full queue is counted and never waited for;
jobs older than their timeout reach the handler apart from fresh ones (``handler(fresh, late)``), which
decides what they still get (the gateway records their answers: service.recording.finisher.Finisher.settle).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Generic, TypeVar

from service.ledger.entries import Entry
from service.ledger.store import open_ledger
from service.metric_queue import Series
from service.recording.finisher import Finisher
from service.recording.jobs import Job, Recorder
from service.recording.journal import RowAccounting
from service.runtime.repository import LoadedRepository
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class ShadowThread(Generic[T]):
    """Feeds queued jobs, in batches, to ``handler`` on one daemon thread, within a deadline."""

    def __init__(
        self,
        handler: Callable[[list[T], list[T]], None],
        maxsize: int,
        on_full: Callable[[], None] = lambda: None,
        max_batch: int = 256,
        gather_s: float = 0.05,
    ) -> None:
        self._gather_s = gather_s
        self._handler = handler
        self._on_full = on_full
        self._queue: queue.Queue[tuple[float, T | threading.Event] | None] = queue.Queue(maxsize=maxsize)
        self._max_batch = max_batch
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _ensure_thread(self) -> None:
        # Started on first use, so importing the service (bentoml build) starts no thread.
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="gateway-shadow", daemon=True)
                self._thread.start()

    def submit(self, job: T, deadline: float) -> bool:
        """Queue a job to be handled fresh until ``deadline`` (time.monotonic()); False (and counted)
        when the queue is full."""
        if self._thread is None:
            self._ensure_thread()
        try:
            self._queue.put_nowait((deadline, job))
            return True
        except queue.Full:
            self._on_full()
            return False

    def _take(self) -> tuple[list[T], list[T], list[threading.Event], int, bool]:
        """(fresh jobs, expired jobs, barriers to release after them, items taken off the queue, stop
        requested)."""
        first = self._queue.get()
        items = [first]
        if first is not None and not isinstance(first[1], threading.Event) and self._gather_s > 0:
            # Sleep, then take what queued meanwhile: fewer, larger batches, and no wake-up of this
            # thread per request (a timed get per item cost every request a context switch).
            time.sleep(self._gather_s)
        while len(items) < self._max_batch and first is not None:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        stop = any(i is None for i in items)
        real = [i for i in items if i is not None]
        barriers: list[threading.Event] = []
        jobs: list[T] = []
        expired: list[T] = []
        for deadline, item in real:
            if isinstance(item, threading.Event):
                barriers.append(item)
            elif deadline >= now:
                jobs.append(item)
            else:
                expired.append(item)
        return jobs, expired, barriers, len(items), stop

    def _work(self) -> None:
        while True:
            jobs, expired, barriers, taken, stop = self._take()
            try:
                if jobs or expired:
                    self._handler(jobs, expired)
            except Exception:  # a failing handler must never take the worker down
                log.exception("shadow batch of %d jobs failed", len(expired) + len(jobs))
            finally:
                for barrier in barriers:
                    barrier.set()
                for _ in range(taken):
                    self._queue.task_done()
            if stop:
                return

    def barrier(self, timeout_s: float = 10.0) -> bool:
        """Wait until every job queued before this call has been handled (even under constant load,
        unlike drain). True when that happened in time."""
        if self._thread is None:
            return True
        done = threading.Event()
        try:
            self._queue.put((float("inf"), done), timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(timeout_s)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued job has run (for graceful stops and tests)."""
        end = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        """Finish queued work, then stop the thread."""
        if self._thread is None:
            return
        self.drain()
        self._queue.put(None)
        self._thread.join(timeout=5)


class ThreadRecording:
    """The Recording protocol on threads of this worker: jobs with shadow work (or every job, when a
    recorder watches) go to the shadow thread in batches; the rest are recorded at once (a queue put
    on the ledger writer's queue). Every answered row is accounted for (service/recording/journal.py):
    committed, or counted as unrecorded with the ledger's reason."""

    def __init__(
        self,
        settings: Settings,
        series: Callable[[], Series],
        recorder: Recorder | None = None,
    ) -> None:
        self._versions: dict[str, LoadedRepository] = {}
        self._keep = settings.evaluator_keep_versions
        self._series = series
        self.rows = RowAccounting(settings)
        self.ledger = open_ledger(settings, self._committed, self._unrecorded)
        self._recorder = recorder
        self.finisher = Finisher(series, lambda: self.ledger, self._versions.__getitem__, lambda: recorder)
        self._shadow: ShadowThread[Job] = ShadowThread(
            self._settle,
            settings.shadow_queue,
            on_full=lambda: series().dropped["shadow_queue_full"].inc(),
            max_batch=settings.shadow_max_batch,
            gather_s=settings.shadow_gather_s,
        )

    def _committed(self, entry: Entry, inserted: int) -> None:
        self.rows.committed(entry.row_count, inserted, self._series())

    def _unrecorded(self, reason: str, entry: Entry) -> None:
        self.rows.unrecorded(reason, len(entry.request_ids), entry.row_count, self._series())

    def prepare(self, repo: LoadedRepository) -> bool:
        """Keep the version's graphs for its jobs (and the previous version's, for jobs queued before a
        reload); open the crash journal on the first load."""
        self.rows.start()
        self._versions.pop(str(repo.path), None)
        self._versions[str(repo.path)] = repo
        while len(self._versions) > self._keep:
            del self._versions[next(iter(self._versions))]
        return True

    def submit(self, job: Job) -> bool:
        self.rows.answered(job.rows)
        if (job.shadow or self._recorder is not None) and self._shadow.submit(job, job.deadline):
            return True
        # No shadow work (or no room for it): record what was answered right away.
        self.finisher.record_answers([job.without_shadow()] if job.shadow else [job])
        return True

    def _settle(self, fresh: list[Job], late: list[Job]) -> None:
        self.finisher.settle(fresh, late)

    def barrier(self, timeout_s: float = 10.0) -> bool:
        """True once everything submitted before this call is committed."""
        ok = self._shadow.barrier(timeout_s)
        return (self.ledger.flush(timeout_s) if self.ledger is not None else True) and ok

    def health(self) -> dict[str, object]:
        ledger = self.ledger.health() if self.ledger is not None else None
        return {"recording": "threads", "ledger": asdict(ledger) if ledger is not None else None}

    def close(self) -> None:
        self._shadow.close()
        if self.ledger is not None:
            self.ledger.close()
        self.rows.close()
