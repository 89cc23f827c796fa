"""`gateway replay`: arguments, building the traffic plan (with a drift phase), and the final table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console

from cli.compare import make_console
from cli.replay import drift_specs as drift
from cli.replay.client import ReplayStats, run
from cli.replay.traffic import Plan, ReplayError, Schema, fetch_schema, records_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gateway replay`."""
    parser.add_argument(
        "--url",
        action="append",
        help="gateway base URL (default http://127.0.0.1:3000); repeat it for replicas: requests take turns, "
        "each label goes to the replica after the one that answered",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="CSV or Parquet table with the target column")
    src.add_argument("--dataset", help="a dataset bundled with scikit-learn (needs the build extra)")
    parser.add_argument("--target", default="target", help="label column (default: target)")
    parser.add_argument("--rps", type=float, default=50.0, help="requests per second (default 50)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="seconds to send (rows cycle)")
    stop.add_argument("--rows", type=int, help="rows to send (resampled with replacement beyond the table)")
    parser.add_argument("--label-delay", type=float, default=2.0, help="seconds before a label is posted")
    parser.add_argument("--label-fraction", type=float, default=0.8, help="share of rows whose label arrives")
    parser.add_argument("--routing-key", help="column whose value is the sticky A/B routing key")
    parser.add_argument("--drift", help=f"drift spec applied after --drift-after. {drift.__doc__}")
    parser.add_argument(
        "--drift-after",
        type=float,
        default=0.5,
        help="fraction of the rows (or of --duration) sent before the drift starts (default 0.5)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="Gaussian noise on numeric columns of resampled rows, in column standard deviations",
    )
    parser.add_argument("--oip", action="store_true", help="send through the Open Inference Protocol route")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)


def load_table(data: Path | None, dataset: str | None) -> pd.DataFrame:
    """The table to replay: a file, or a bundled scikit-learn dataset."""
    if dataset is not None:
        try:
            from builders.data import load_bundled
            from builders.errors import BuildError
        except ImportError as exc:  # pragma: no cover - serving-only install
            raise ReplayError("--dataset needs the build extra (scikit-learn); use --data") from exc
        try:
            return load_bundled(dataset)[0]
        except BuildError as exc:
            raise ReplayError(str(exc)) from exc
    assert data is not None
    if not data.is_file():
        raise ReplayError(f"--data: {data}: no such file")
    try:
        if data.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(data)
        return pd.read_csv(data)
    except Exception as exc:  # pandas raises many types
        raise ReplayError(f"--data: {data}: cannot read: {str(exc).splitlines()[0]}") from exc


def make_plan(
    frame: pd.DataFrame,
    schema: Schema,
    target: str,
    *,
    rows: int,
    routing_key: str | None,
    drift_spec: str | None,
    drift_after: float,
    jitter: float,
    seed: int,
) -> Plan:
    """Rows in sending order: the clean phase, then the drifted phase (if any)."""
    if target not in frame.columns:
        raise ReplayError(f"--target: column {target!r} not in the table")
    if routing_key is not None and routing_key not in frame.columns:
        raise ReplayError(f"--routing-key: column {routing_key!r} not in the table")
    if not 0 <= drift_after <= 1:
        raise ReplayError(f"--drift-after: expected a fraction in [0, 1], got {drift_after}")
    rng = np.random.default_rng(seed)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if frame.empty:
        raise ReplayError("--data: no rows with a label")
    ops = None
    if drift_spec:
        try:
            ops = drift.parse(drift_spec, frame, target)
        except drift.DriftError as exc:
            raise ReplayError(str(exc)) from exc
    n_clean = rows if ops is None else round(rows * drift_after)
    phases = [_sample(frame, n_clean, rng, jitter, schema)]
    if ops is not None and rows - n_clean > 0:
        drifted = drift.apply(ops, frame, target, rng)
        phases.append(_sample(drifted, rows - n_clean, rng, jitter, schema))
    sent = pd.concat(phases, ignore_index=True)
    labels = [_label(v, schema) for v in sent[target].tolist()]
    keys: list[str | None] = (
        [str(v) for v in sent[routing_key].tolist()] if routing_key else [None] * len(sent)
    )
    return Plan(records=records_from(sent, schema), labels=labels, keys=keys)


def _sample(
    frame: pd.DataFrame, n: int, rng: np.random.Generator, jitter: float, schema: Schema
) -> pd.DataFrame:
    if n <= 0:
        return frame.iloc[:0]
    if n <= len(frame):
        return frame.iloc[rng.permutation(len(frame))[:n]].reset_index(drop=True)
    out = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    if jitter > 0:
        for c in schema.inputs:
            if c["kind"] == "numeric" and c["name"] in out.columns:
                std = float(frame[c["name"]].std()) or 0.0
                out[c["name"]] = out[c["name"]] + rng.normal(0, jitter * std, n)
    return out


def _label(value: Any, schema: Schema) -> Any:
    """Labels as the server's class values (a CSV may read "1" where the class is 1)."""
    if isinstance(value, np.generic):
        value = value.item()
    if schema.task == "regression":
        return float(value)
    for c in schema.classes:
        if str(c) == str(value):
            return c
    return value


def run_cli(args: argparse.Namespace) -> int:
    """Replay, then print the comparison; exit 2 on bad input, 1 if nothing was answered."""
    console = make_console()
    for flag, value, ok in (
        ("--rps", args.rps, args.rps > 0),
        ("--label-delay", args.label_delay, args.label_delay >= 0),
        ("--label-fraction", args.label_fraction, 0 <= args.label_fraction <= 1),
        ("--concurrency", args.concurrency, args.concurrency >= 1),
        ("--rows", args.rows, args.rows is None or args.rows >= 1),
        ("--duration", args.duration, args.duration is None or args.duration > 0),
    ):
        if not ok:
            print(f"gateway replay: error: {flag}: invalid value {value}", file=sys.stderr)
            return 2
    urls = [u.rstrip("/") for u in (args.url or ["http://127.0.0.1:3000"])]
    url = urls[0]
    try:
        schemas = [fetch_schema(u) for u in urls]
        schema = schemas[0]
        for u, other in zip(urls[1:], schemas[1:], strict=True):
            if (other.model, other.inputs) != (schema.model, schema.inputs):
                raise ReplayError(
                    f"--url {u}: serves another model than {url} ({other.model}, not {schema.model})"
                )
        frame = load_table(args.data, args.dataset)
        n_rows = args.rows or (int(args.duration * args.rps) + 1 if args.duration else len(frame))
        plan = make_plan(
            frame,
            schema,
            args.target,
            rows=n_rows,
            routing_key=args.routing_key,
            drift_spec=args.drift,
            drift_after=args.drift_after,
            jitter=args.jitter,
            seed=args.seed,
        )
    except ReplayError as exc:
        print(f"gateway replay: error: {exc}", file=sys.stderr)
        return 2
    console.print(
        f"replaying {len(plan.records)} rows to {', '.join(urls)} ({'OIP' if args.oip else 'JSON'}) at {args.rps:g} "
        f"req/s; labels after {args.label_delay:g}s for {args.label_fraction:.0%} of rows"
        + (f"; drift {args.drift!r} after {args.drift_after:.0%}" if args.drift else ""),
        markup=False,
    )
    stats = asyncio.run(
        run(
            urls,
            plan,
            schema,
            rps=args.rps,
            duration=args.duration,
            label_delay=args.label_delay,
            label_fraction=args.label_fraction,
            oip=args.oip,
            seed=args.seed,
            concurrency=args.concurrency,
            progress=lambda s: console.print(s.line(), markup=False),
        )
    )
    print_end(console, stats, url)
    return 0 if stats.answered else 1


def print_end(console: Console, stats: ReplayStats, url: str) -> None:
    """Error summary, the comparison tables, and the input drift table of the default window (what
    the replay's --drift spec moved)."""
    from cli import compare, drift

    if stats.errors:
        console.print("errors: " + ", ".join(f"{k} {v}" for k, v in stats.errors.most_common()), markup=False)
    console.print(f"answered by: {dict(stats.variants)}; {stats.seconds:.1f}s", markup=False)
    for path, render in (("/compare", compare.render), ("/drift", drift.render)):
        try:
            r = httpx.get(f"{url}{path}", timeout=60)
        except httpx.HTTPError as exc:
            console.print(f"cannot fetch {path}: {type(exc).__name__}", markup=False)
            continue
        if r.status_code == 200:
            render(r.json(), console)
        else:
            console.print(f"{path} answered {r.status_code}: {r.text[:200]}", markup=False)
