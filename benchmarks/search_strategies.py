"""Random search against successive halving at the same trial budget, on the quality benchmark's
tables (benchmarks/quality.py writes them; run it, or its --quick, first).

    .venv/bin/python benchmarks/search_strategies.py [--tables fair,anes96] [--budget 8]

For each table and strategy: `gateway build --search S --budget B` on the fixed training split, its
wall time, and from the cards each family's best CV score and the champion's test metric (the
gateway's own test split inside the training file). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contract.verify import load_card, load_manifest, resolve_version  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "quality"
GATEWAY = ROOT / ".venv" / "bin" / "gateway"


def run(table: str, strategy: str, budget: int) -> dict[str, object]:
    folder = WORK / "tables" / table
    target = json.loads((folder / "table.json").read_text())["target"]
    out = WORK / f"repos-{strategy}"
    started = time.perf_counter()
    subprocess.run(
        [str(GATEWAY), "build", "--data", str(folder / "train.csv"), "--target", target, "--out", str(out),
         "--name", table, "--search", strategy, "--budget", str(budget), "--no-learning-curves"],
        check=True, stdout=subprocess.DEVNULL, timeout=3600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    version = resolve_version(out / table)
    manifest = load_manifest(version)
    metric = manifest.primary_metric
    cv = {}
    for spec in manifest.members:
        card = load_card(version / spec.card)
        if card.search is not None and card.search.best_cv_score is not None:
            cv[spec.name] = abs(card.search.best_cv_score)
    champion = manifest.routing.champion
    spec_card = next(
        (m.card for m in manifest.members if m.name == champion),
        next((e.card for e in manifest.ensembles if e.name == champion), ""),
    )
    test = load_card(version / spec_card).metrics["test"][metric]
    return {"table": table, "strategy": strategy, "seconds": wall, "metric": metric, "cv": cv,
            "champion": champion, "test": test}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", default="fair,anes96,digits,diamonds")
    parser.add_argument("--budget", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for table in args.tables.split(","):
        for strategy in ("random", "halving"):
            print(f"[search] {table} {strategy}", file=sys.stderr, flush=True)
            rows.append(run(table, strategy, args.budget))
    print(
        "| table | search | build s | champion | champion test | mean best CV score over families | families better than random |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["table"] == r["table"] and b["strategy"] == "random")
        cv, base_cv = r["cv"], base["cv"]
        assert isinstance(cv, dict) and isinstance(base_cv, dict)
        lower = r["metric"] == "rmse"
        better = sum(1 for k in cv if k in base_cv and (cv[k] < base_cv[k] if lower else cv[k] > base_cv[k]))
        mean_cv = sum(cv.values()) / max(len(cv), 1)
        print(
            f"| {r['table']} | {r['strategy']} | {r['seconds']:.0f} | {r['champion']} | {r['metric']} "
            f"{r['test']:.4f} | {mean_cv:.4f} | {better}/{len(cv)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
