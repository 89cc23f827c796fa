"""Shadow work off the request path: a bounded queue and one worker thread.

onnxruntime releases the GIL while it runs, so shadow members computed here do not hold up the event
loop; a full queue or a job older than its timeout is dropped and counted, never waited for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class ShadowStats:
    """Counters of what the shadow worker did."""

    done: int = 0
    dropped_full: int = 0
    dropped_timeout: int = 0
    failed: int = 0


class ShadowExecutor:
    """Runs submitted callables in order on one daemon thread, within a deadline."""

    def __init__(self, maxsize: int, timeout_s: float, on_drop: Callable[[str], None] | None = None) -> None:
        self._on_drop = on_drop or (lambda _reason: None)
        self._queue: queue.Queue[tuple[float, Callable[[], None]] | None] = queue.Queue(maxsize=maxsize)
        self._timeout = timeout_s
        self.stats = ShadowStats()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _ensure_thread(self) -> None:
        # Started on first use, so importing the service (bentoml build) starts no thread.
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="gateway-shadow", daemon=True)
                self._thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue a job; False (and counted) when the queue is full."""
        if self._thread is None:
            self._ensure_thread()
        try:
            self._queue.put_nowait((time.monotonic() + self._timeout, job))
            return True
        except queue.Full:
            self.stats.dropped_full += 1
            self._on_drop("shadow_queue_full")
            return False

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            deadline, job = item
            try:
                if time.monotonic() > deadline:
                    self.stats.dropped_timeout += 1
                    self._on_drop("shadow_timeout")
                    continue
                job()
                self.stats.done += 1
            except Exception:  # a failing shadow variant must never take the worker down
                self.stats.failed += 1
                self._on_drop("shadow_failed")
                log.exception("shadow job failed")
            finally:
                self._queue.task_done()

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued job has run (for graceful stops and tests)."""
        end = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Finish queued work, then stop the thread."""
        if self._thread is None:
            return
        self.drain()
        self._queue.put(None)
        self._thread.join(timeout=5)
