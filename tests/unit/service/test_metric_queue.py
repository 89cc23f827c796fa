"""Queued metric updates: applied in bulk, they expose exactly what direct updates would."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from service import metric_queue, metrics


def _pair(kind: str) -> tuple[CollectorRegistry, object, CollectorRegistry, object]:
    made = []
    for _ in range(2):
        registry = CollectorRegistry()
        if kind == "histogram":
            metric = Histogram("h", "h", ["m"], buckets=metrics.INFERENCE_BUCKETS, registry=registry)
        else:
            metric = Counter("c", "c", ["m"], registry=registry)
        made += [registry, metric.labels("a")]
    return made[0], made[1], made[2], made[3]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_queued_histogram_observations_match_direct_ones_bucket_by_bucket() -> None:
    direct_reg, direct, queued_reg, child = _pair("histogram")
    queued = metric_queue.Queued(child)
    # Values on, just below and just above bucket bounds, below the first and beyond the last.
    values = [0.0, 1e-6, 1e-5, 1.0001e-5, 2.5e-5, 7.4e-5, 1e-3, 0.0999, 0.1, 0.7, 1.0, 3.0, 120.0]
    for v in values * 3:
        direct.observe(v)  # type: ignore[attr-defined]
        queued.observe(v)
    assert _samples(queued_reg) != _samples(direct_reg)  # nothing applied before the flush
    assert metric_queue.flush() >= len(values) * 3
    assert _samples(queued_reg) == pytest.approx(_samples(direct_reg))


def test_queued_counter_sums_updates_from_many_threads_without_losing_any() -> None:
    direct_reg, direct, queued_reg, child = _pair("counter")
    queued = metric_queue.Queued(child)

    def work() -> None:
        for _ in range(5000):
            queued.inc(2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    direct.inc(4 * 5000 * 2)  # type: ignore[attr-defined]
    metric_queue.flush()
    assert _samples(queued_reg) == _samples(direct_reg)


def test_queued_counter_refuses_negative_amounts_at_the_call() -> None:
    _, _, _, child = _pair("counter")
    with pytest.raises(ValueError):
        metric_queue.Queued(child).inc(-1)


def test_exposition_flushes_this_process_first() -> None:
    child = metrics.COMPARED.labels("queued-exposition-test")
    before = metrics.REGISTRY.get_sample_value(
        "gateway_compared_rows_total", {"model": "queued-exposition-test"}
    )
    metric_queue.Queued(child).inc(7)
    body, _ = metric_queue.exposition()
    assert (
        b'gateway_compared_rows_total{model="queued-exposition-test"} '
        + str(float((before or 0) + 7)).encode()
        in body
    )
