"""Inference latency measured here, in onnxruntime and in scikit-learn, for the leaderboard."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

SINGLE_ROW_RUNS = 300
BATCH_ROWS = 64
BATCH_RUNS = 30
SKLEARN_RUNS = 30


def median_us(fn: Callable[[], Any], runs: int, warmup: int = 5) -> float:
    """Median wall time of ``fn`` in microseconds (medians resist the noise of a shared machine)."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return float(np.median(times) * 1e6)


def single_and_batch_us(run_rows: Callable[[int], Callable[[], Any]]) -> tuple[float, float]:
    """(single-row µs, per-row µs in a 64-row batch); ``run_rows(n)`` returns a callable on n rows."""
    single = median_us(run_rows(1), SINGLE_ROW_RUNS)
    batch = median_us(run_rows(BATCH_ROWS), BATCH_RUNS) / BATCH_ROWS
    return round(single, 2), round(batch, 3)
