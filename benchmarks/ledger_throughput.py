"""Ledger write throughput, SQLite and PostgreSQL side by side in one run: rows per second through
the real writer (service/ledger/store.py), each row carrying every variant's output as the full
ensemble gateway records it, and the writer's CPU time per 1,000 rows.

    .venv/bin/python benchmarks/ledger_throughput.py                 # 13 variants, 60,000 rows, 3 rounds
    .venv/bin/python benchmarks/ledger_throughput.py --rows 5000 --rounds 1   # the bounded run

PostgreSQL is a throw-away cluster (Debian's server, tests/postgres.py) with fsync on, as a
production server would run. Entries are shaped as the evaluator sends them: requests of one row,
``--batch`` requests per entry. Compare the rows/s with the gateway's saturation throughput
(benchmarks/BENCHMARKS.md: one row per request, every row written once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contract.outputs import Output  # noqa: E402
from service.ledger.entries import Entry  # noqa: E402
from service.ledger.store import Ledger  # noqa: E402
from tests.postgres import PostgresCluster  # noqa: E402


def entries(n_rows: int, batch: int, variants: int, run: str) -> list[Entry]:
    rng = np.random.default_rng(0)
    out = []
    for start in range(0, n_rows, batch):
        k = min(batch, n_rows - start)
        proba = rng.random((k, 1))
        outputs = {
            f"v{j}": (
                "member",
                Output(labels=(proba[:, 0] > 0.5).astype(np.int64), proba=np.hstack([1 - proba, proba])),
            )
            for j in range(variants)
        }
        served = [
            ("v0", Output(labels=outputs["v0"][1].labels[i : i + 1], proba=outputs["v0"][1].proba[i : i + 1]))
            for i in range(k)
        ]  # type: ignore[index]
        out.append(
            Entry(
                request_ids=[f"{run}-{start + i}" for i in range(k)],
                rows=[1] * k,
                served=served,
                model="m",
                version=1,
                created_at=time.time(),
                outputs=outputs,
            )
        )
    return out


def measure(target: str, batch_entries: list[Entry], rows: int) -> tuple[float, float]:
    """(rows/s, writer CPU ms per 1,000 rows) for one writer draining every entry."""
    done = threading.Event()
    written = [0]

    def committed(_e: Entry, n: int) -> None:
        written[0] += n
        if written[0] >= rows:
            done.set()

    ledger = Ledger(target, flush_interval_s=0.05, max_queue=len(batch_entries) + 10, on_commit=committed)
    t0 = time.perf_counter()
    writer_cpu0 = _thread_cpu(ledger)
    for e in batch_entries:
        ledger.record(e)
    done.wait(600)
    seconds = time.perf_counter() - t0
    cpu = _thread_cpu(ledger) - writer_cpu0
    ledger.close()
    return rows / seconds, 1000 * cpu / rows * 1000


def _thread_cpu(ledger: Ledger) -> float:
    """CPU seconds of the writer thread so far (Linux: /proc/self/task/<tid>/stat)."""
    tid = ledger._thread.native_id
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=50, help="requests per evaluator entry")
    p.add_argument("--variants", type=int, default=13, help="outputs per row (members + ensembles)")
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    cluster = PostgresCluster(folder / "pg", fsync=True)
    results: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
    try:
        for r in range(args.rounds):
            for kind in ("sqlite", "postgresql"):  # interleaved: drifts of a shared machine hit both
                target = (
                    str(folder / f"l{r}.sqlite") if kind == "sqlite" else cluster.create_database(f"bench{r}")
                )
                work = entries(args.rows, args.batch, args.variants, f"{kind}{r}")
                rate, cpu = measure(target, work, args.rows)
                results[kind].append((rate, cpu))
                print(
                    f"round {r + 1} {kind:10s} {rate:10,.0f} rows/s  writer CPU {cpu:6.1f} ms per 1,000 rows",
                    flush=True,
                )
    finally:
        cluster.stop()
    print(f"\n| ledger | rows/s (median of {args.rounds}) | writer CPU ms / 1,000 rows | vs SQLite |")
    print("|---|---|---|---|")
    base = statistics.median(x[0] for x in results["sqlite"])
    for kind, rows in results.items():
        rate = statistics.median(x[0] for x in rows)
        cpu = statistics.median(x[1] for x in rows)
        print(f"| {kind} | {rate:,.0f} | {cpu:.1f} | {rate / base:.2f}x |")
    print(
        f"\n{args.variants} variants per row, {args.batch} one-row requests per entry, {args.rows:,} rows per round"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
