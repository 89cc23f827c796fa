"""The evaluator process's counts: what its finisher counted, kept as plain numbers, sent back to the
worker after every batch and applied there to the Prometheus metrics (:func:`apply_counts`)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any

from service import metrics
from service.ledger.store import LedgerHealth
from service.metric_queue import Series
from service.recording.messages import CountsReport


class PlainCount:
    """A number that counts up until the next report (the Count protocol without Prometheus)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.total += amount


class Observations:
    """Latency observations kept until the next report (the histogram protocol without Prometheus)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, amount: float) -> None:
        self.seen.append(amount)


class EvaluatorCounts:
    """The Counters a finisher increments in the evaluator, graph timings, and which batches are
    accounted for (every job committed or counted): the ledger writer's thread reports those, so
    everything here is guarded by one lock."""

    def __init__(self) -> None:
        self.predictions: defaultdict[tuple[str, str], PlainCount] = defaultdict(PlainCount)
        self.disagreement: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.compared: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.dropped: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.unrecorded: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.timers: dict[str, Observations] = {}
        self.lock = threading.Lock()
        self._outstanding: dict[int, int] = {}
        self._confirmed: list[int] = []

    def expect(self, batches: Counter[int]) -> None:
        """Jobs of these batches are about to be recorded."""
        with self.lock:
            for seq, n in batches.items():
                self._outstanding[seq] = self._outstanding.get(seq, 0) + n

    def accounted(self, batches: Counter[int]) -> None:
        """Jobs of these batches are committed or counted; a batch with none left is confirmed. (A job
        recorded twice, after a failed shadow batch, may count twice: the batch is confirmed only when
        its last entry is accounted for, and the ledger keeps the first record.)"""
        with self.lock:
            for seq, n in batches.items():
                left = self._outstanding.get(seq)
                if left is None:
                    continue
                if left - n <= 0:
                    del self._outstanding[seq]
                    self._confirmed.append(seq)
                else:
                    self._outstanding[seq] = left - n

    @property
    def pending(self) -> bool:
        with self.lock:
            return bool(self._confirmed)

    def timer(self, name: str) -> Observations:
        return self.timers.setdefault(name, Observations())

    def report(self, ledger: LedgerHealth | None = None) -> CountsReport:
        """Everything counted since the last report; then start again from zero."""

        def take(counts: dict[Any, PlainCount]) -> dict[Any, float]:
            out = {k: a.total for k, a in counts.items() if a.total}
            counts.clear()
            return out

        with self.lock:
            report = CountsReport(
                confirmed=self._confirmed,
                unrecorded=take(self.unrecorded),
                predictions=take(self.predictions),
                disagreement=take(self.disagreement),
                compared=take(self.compared),
                dropped=take(self.dropped),
                inference={n: t.seen for n, t in self.timers.items() if t.seen},
                ledger=ledger,
            )
            self._confirmed = []
            for t in self.timers.values():
                t.seen = []
        return report


def apply_counts(report: CountsReport, series: Series) -> None:
    """The evaluator's counts into this worker's metrics (prebuilt series where they exist; a version
    swapped out meanwhile still gets its counts)."""
    for (model, role), n in report.predictions.items():
        (series.predictions.get((model, role)) or metrics.PREDICTIONS.labels(model, role)).inc(n)
    for model, n in report.disagreement.items():
        (series.disagreement.get(model) or metrics.DISAGREEMENT.labels(model)).inc(n)
    for model, n in report.compared.items():
        (series.compared.get(model) or metrics.COMPARED.labels(model)).inc(n)
    for reason, n in report.dropped.items():
        (series.dropped.get(reason) or metrics.DROPPED.labels(reason)).inc(n)
    for reason, n in report.unrecorded.items():
        (series.unrecorded.get(reason) or metrics.UNRECORDED_ROWS.labels(reason)).inc(n)
    for model, seen in report.inference.items():
        timer = series.inference.get(model) or metrics.INFERENCE_SECONDS.labels(model)
        for seconds in seen:
            timer.observe(seconds)
