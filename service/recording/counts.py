"""The evaluator process's counts: what its finisher counted, kept as plain numbers, sent back to the
worker after every batch and applied there to the Prometheus metrics (:func:`apply_counts`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from service import metrics
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
    """The Counters a finisher increments in the evaluator, plus graph timings and finished jobs."""

    def __init__(self) -> None:
        self.predictions: defaultdict[tuple[str, str], PlainCount] = defaultdict(PlainCount)
        self.disagreement: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.compared: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.dropped: defaultdict[str, PlainCount] = defaultdict(PlainCount)
        self.timers: dict[str, Observations] = {}
        self.jobs = 0

    def timer(self, name: str) -> Observations:
        return self.timers.setdefault(name, Observations())

    def report(self) -> CountsReport:
        """Everything counted since the last report; then start again from zero."""

        def take(counts: dict[Any, PlainCount]) -> dict[Any, float]:
            out = {k: a.total for k, a in counts.items() if a.total}
            counts.clear()
            return out

        report = CountsReport(
            jobs=self.jobs,
            predictions=take(self.predictions),
            disagreement=take(self.disagreement),
            compared=take(self.compared),
            dropped=take(self.dropped),
            inference={n: t.seen for n, t in self.timers.items() if t.seen},
        )
        for t in self.timers.values():
            t.seen = []
        self.jobs = 0
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
    for model, seen in report.inference.items():
        timer = series.inference.get(model) or metrics.INFERENCE_SECONDS.labels(model)
        for seconds in seen:
            timer.observe(seconds)
