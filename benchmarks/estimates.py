"""Accuracy estimates before labels (CBPE) against the truth, by simulation.

    .venv/bin/python benchmarks/estimates.py                 # 2,000 runs per scenario (~1 min)
    .venv/bin/python benchmarks/estimates.py --runs 200

Each run draws a validation split and a batch of live rows without labels from a known world, fits
the accuracy estimator on the validation split exactly as `gateway build` does
(builders/estimation.py), estimates the live rows' accuracy exactly as /compare does
(service/stats/estimates.py), and compares it with the accuracy those rows really have. The model
is a fixed, imperfect classifier: it uses x1 and ignores x2, on which the truth also depends.

Scenarios: no shift; a shift of x1 (a column the model sees: the confidence still means the same, the
estimate should hold); a shift of x2 (a column the model ignores: its confidence now means less, the
estimate is off, and the table says by how much). Prints a Markdown table: runs, mean true accuracy,
mean estimate, mean error, mean |error|, share of runs whose 95% interval covered the truth, and the
interval's mean width.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from builders.estimation import fit_estimator  # noqa: E402
from contract.outputs import Output  # noqa: E402
from service.stats.estimates import accuracy_estimate  # noqa: E402

SCENARIOS = {"none": (0.0, 0.0), "shift x1 +1 (seen)": (1.0, 0.0), "shift x2 +1 (ignored)": (0.0, 1.0)}


@dataclass(frozen=True)
class Result:
    scenario: str
    runs: int
    true_accuracy: float
    estimate: float
    error: float
    abs_error: float
    coverage: float
    width: float


def _world(rng: np.random.Generator, n: int, shift: tuple[float, float]) -> Output:
    """n rows: the model's served output, with the true labels drawn from the world."""
    x1 = rng.normal(shift[0], 1.0, n)
    x2 = rng.normal(shift[1], 1.0, n)
    p_true = 1.0 / (1.0 + np.exp(-(2.0 * x1 - 1.5 * x2 + 0.5 * np.sin(3 * x1))))
    y = (rng.random(n) < p_true).astype(np.int64)
    p1 = 1.0 / (1.0 + np.exp(-1.6 * x1))  # the model: x1 only
    proba = np.column_stack([1.0 - p1, p1])
    return Output(labels=(p1 >= 0.5).astype(np.int64), proba=proba, raw_labels=y)  # raw_labels: truth


def simulate(scenario: str, runs: int, validation_rows: int, live_rows: int, seed: int = 0) -> Result:
    rng = np.random.default_rng(seed)
    truth, est, covered, width = [], [], [], []
    for _ in range(runs):
        val = _world(rng, validation_rows, (0.0, 0.0))
        estimator = fit_estimator(val, val.raw_labels, 2)
        assert estimator is not None
        live = _world(rng, live_rows, SCENARIOS[scenario])
        assert live.labels is not None and live.proba is not None
        doc = accuracy_estimate(estimator, True, (live.labels.astype(float), live.proba[:, 1]), None)
        u = doc["unlabelled"]
        actual = float(np.mean(live.labels == live.raw_labels))
        truth.append(actual)
        est.append(u["accuracy"])
        covered.append(u["low"] <= actual <= u["high"])
        width.append(u["high"] - u["low"])
    t, e = np.array(truth), np.array(est)
    return Result(
        scenario,
        runs,
        float(t.mean()),
        float(e.mean()),
        float((e - t).mean()),
        float(np.abs(e - t).mean()),
        float(np.mean(covered)),
        float(np.mean(width)),
    )


def table(results: list[Result], validation_rows: int, live_rows: int) -> str:
    lines = [
        f"Validation split {validation_rows} rows, {live_rows} live rows without labels per run; 95% intervals.",
        "",
        "| scenario | runs | true accuracy | estimate | mean error | mean abs error | coverage | mean width |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.runs} | {r.true_accuracy:.4f} | {r.estimate:.4f} | {r.error:+.4f} | "
            f"{r.abs_error:.4f} | {r.coverage:.1%} | {r.width:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--validation-rows", type=int, default=1000)
    p.add_argument("--live-rows", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    results = [
        simulate(s, a.runs, a.validation_rows, a.live_rows, a.seed + i) for i, s in enumerate(SCENARIOS)
    ]
    print(table(results, a.validation_rows, a.live_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
