"""Hot-path metric updates, queued and applied in bulk, and the labelled series of a loaded version.

In multiprocess mode every ``inc`` and ``observe`` takes a lock, checks the pid and writes an mmap'ed
value: ~45 µs a request for the 5 updates a prediction makes. Appending to a deque costs well under a
microsecond, and a flusher thread applies the queue every ``metrics_flush_interval_s`` (one write per
series per interval). ``.labels()`` is costly too, so the series a loaded version needs are resolved
once, when it loads (:class:`Series`).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from service import metrics
from service.metrics import (
    COMPARED,
    DISAGREEMENT,
    DROP_REASONS,
    DROPPED,
    INFERENCE_SECONDS,
    PREDICTIONS,
    REQUEST_SECONDS,
    ROLES,
    SERVED_ROWS,
)

log = logging.getLogger(__name__)

_interval_s = 0.25
_PENDING: deque[tuple[Any, float, bool]] = deque()
_FLUSH_LOCK = threading.Lock()
_flusher: threading.Thread | None = None
_NEVER = threading.Event()
"""Never set: the flusher waits on it (an event wait, which profilers count as idle)."""


class Queued:
    """A labelled child whose updates are queued and applied in bulk by :func:`flush`."""

    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        self.child = child

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        if _flusher is None:  # started on first use: importing the service (bentoml build) starts none
            _ensure_flusher()
        _PENDING.append((self.child, amount, False))

    def observe(self, amount: float) -> None:
        if _flusher is None:
            _ensure_flusher()
        _PENDING.append((self.child, amount, True))


def flush() -> int:
    """Apply every queued update; returns how many there were."""
    with _FLUSH_LOCK:
        counters: dict[Any, float] = {}
        histograms: dict[Any, tuple[list[float], list[int]]] = {}
        n = 0
        while True:
            try:
                child, amount, observed = _PENDING.popleft()
            except IndexError:
                break
            n += 1
            if not observed:
                counters[child] = counters.get(child, 0.0) + amount
                continue
            agg = histograms.get(child)
            if agg is None:
                agg = histograms[child] = ([0.0], [0] * len(child._upper_bounds))
            agg[0][0] += amount
            # The first bucket whose upper bound is >= amount, as Histogram.observe counts it.
            agg[1][bisect.bisect_left(child._upper_bounds, amount)] += 1
        for child, total in counters.items():
            child.inc(total)
        for child, (total_sum, counts) in histograms.items():
            # Histogram children keep one (non-cumulative) value per bucket plus the sum; writing
            # them in bulk is what observe() does one observation at a time (prometheus_client 0.26).
            child._sum.inc(total_sum[0])
            for i, count in enumerate(counts):
                if count:
                    child._buckets[i].inc(count)
        return n


def _flush_forever() -> None:
    while not _NEVER.wait(_interval_s):
        try:
            flush()
        except Exception:  # pragma: no cover - a metric bug must not stop the flusher
            log.exception("metrics flush failed")


def _ensure_flusher() -> None:
    global _flusher
    if _flusher is None:
        with _FLUSH_LOCK:
            if _flusher is None:
                _flusher = threading.Thread(target=_flush_forever, name="gateway-metrics", daemon=True)
                _flusher.start()


class Series:
    """The labelled series one loaded version updates on the hot path, resolved once when it loads,
    their updates queued (see :class:`Queued`). Also the Counters a thread-side finisher increments."""

    def __init__(self, models: Iterable[str], timed: Iterable[str] | None = None) -> None:
        names = list(models)
        metrics.precreate(names, timed)
        self.inference = {m: Queued(INFERENCE_SECONDS.labels(m)) for m in (names if timed is None else timed)}
        self.predictions = {(m, r): Queued(PREDICTIONS.labels(m, r)) for m in names for r in ROLES}
        self.disagreement = {m: Queued(DISAGREEMENT.labels(m)) for m in names}
        self.compared = {m: Queued(COMPARED.labels(m)) for m in names}
        self.request = {(m, p): Queued(REQUEST_SECONDS.labels(m, p)) for m in names for p in ("json", "oip")}
        self.dropped = {r: Queued(DROPPED.labels(r)) for r in DROP_REASONS}
        self.unrecorded = {r: Queued(metrics.UNRECORDED_ROWS.labels(r)) for r in metrics.UNRECORDED_REASONS}
        self.served_rows = Queued(SERVED_ROWS)


def set_flush_interval(seconds: float) -> None:
    """How often the flusher applies queued updates (GATEWAY_METRICS_FLUSH_INTERVAL_S)."""
    global _interval_s
    _interval_s = seconds


def exposition() -> tuple[bytes, str]:
    """The /metrics body, after applying every update queued in this process."""
    flush()
    return metrics.exposition()
