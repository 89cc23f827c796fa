"""`gateway compare --url URL`: the /compare document as terminal tables."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def make_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output goes to a file or a CI log."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(low: float | None, high: float | None, digits: int = 4) -> str:
    return f"[{_f(low, digits)}, {_f(high, digits)}]" if low is not None else "–"


def render(doc: dict[str, Any], console: Console) -> None:
    """Models (offline vs online with intervals and ranks), paired tests, and the summary."""
    metric = doc["metric"]
    t = Table(
        title=f"Offline vs online: {doc['model']} v{doc['version']} ({metric}; champion {doc['champion']})"
    )
    for col in (
        "model",
        "kind",
        f"offline {metric}",
        "offline rank",
        f"online {metric}",
        "95% interval",
        "labels",
        "online rank",
    ):
        t.add_column(col)
    rows = sorted(doc["models"], key=lambda m: m.get("online_rank") or 10**6)
    for m in rows:
        name = m["model"] + (" ★" if m["model"] == doc["champion"] else "")
        interval = _interval(m["low"], m["high"], 3)
        t.add_row(
            name,
            m["kind"],
            _f(m["offline"]),
            _f(m.get("offline_rank")),
            _f(m["online"]),
            interval,
            str(m["n"]),
            _f(m.get("online_rank")),
        )
    console.print(t)
    tests = Table(
        title=f"Champion {doc['champion']} vs each model on the same labelled rows "
        "(verdicts: always-valid sequential p, Bonferroni; fixed-sample McNemar / Wilcoxon p, Holm, for reference)"
    )
    for col in (
        "challenger",
        "rows",
        "champion",
        "challenger score",
        "always-valid p",
        "fixed p (adj.)",
        "verdict",
    ):
        tests.add_column(col)
    for row in doc["tests"]:
        tests.add_row(
            row["challenger"],
            str(row["n"]),
            _f(row["champion_score"]),
            _f(row["challenger_score"]),
            _f(row.get("always_valid_p"), 4),
            _f(row["p_adjusted"], 4),
            row["verdict"],
        )
    console.print(tests)
    calibrated = [m for m in rows if m.get("calibration") and m["calibration"]["n"]]
    if calibrated:
        of = calibrated[0]["calibration"]["of"]
        cal = Table(title=f"Calibration on labelled rows ({of}; 95% intervals; offline = test split)")
        for col in (
            "model",
            "Brier",
            "95% interval",
            "offline Brier",
            "ECE",
            "95% interval",
            "offline ECE",
            "log loss",
            "offline log loss",
        ):
            cal.add_column(col)
        for m in calibrated:
            c = m["calibration"]
            cal.add_row(
                m["model"],
                _f(c["brier"], 4),
                _interval(c["brier_low"], c["brier_high"]),
                _f(c["offline_brier"], 4),
                _f(c["ece"], 4),
                _interval(c["ece_low"], c["ece_high"]),
                _f(c["offline_ece"], 4),
                _f(c.get("log_loss"), 4),
                _f(c.get("offline_log_loss"), 4),
            )
        console.print(cal)
    _estimates(doc, rows, console)
    tau = doc.get("kendall_tau")
    coverage = doc.get("label_coverage")
    console.print(
        f"served rows {doc['served_rows']}, labelled {doc['labelled_rows']}"
        + (f" (coverage {coverage:.0%})" if coverage is not None else "")
        + (
            f"; Kendall's tau offline vs online rank: {tau:.2f} (p {doc['kendall_p']:.3f})"
            if tau is not None
            else ""
        ),
        markup=False,
    )
    console.print(doc["summary"], markup=False)
    side = doc.get("against")
    if side:
        v = Table(
            title=f"v{doc['version']} (live) beside v{side['version']}: {metric}, offline (test split) and online "
            f"(labelled rows: {doc['labelled_rows']} vs {side['labelled_rows']})"
        )
        for col in (
            "model",
            f"offline v{doc['version']}",
            f"offline v{side['version']}",
            f"online v{doc['version']}",
            f"online v{side['version']}",
        ):
            v.add_column(col)
        for m in side["models"]:
            v.add_row(
                m["model"],
                _f(m["offline"]),
                _f(m["earlier_offline"]),
                f"{_f(m['online'])} (n {m['n']})",
                f"{_f(m['earlier_online'])} (n {m['earlier_n']})",
            )
        console.print(v)
        console.print(f"v{side['version']}: {side['summary']}", markup=False)


def _estimates(doc: dict[str, Any], rows: list[dict[str, Any]], console: Console) -> None:
    """Estimated accuracy on the rows without labels, beside what the same estimate said of the rows
    whose labels arrived and what they turned out to be."""
    estimated = [m for m in rows if (m.get("estimate") or {}).get("available")]
    if not estimated:
        return
    t = Table(
        title=f"Accuracy before labels (CBPE, 95% intervals): the {doc['estimates']['unlabelled_rows']} most "
        "recent rows without a label; on labelled rows, the estimate against the truth"
    )
    for col in ("model", "estimated", "95% interval", "labelled: estimated", "labelled: actual", "covered"):
        t.add_column(col)
    for m in estimated:
        u, c = m["estimate"]["unlabelled"], m["estimate"]["labelled_check"]
        t.add_row(
            m["model"],
            _f(u["accuracy"]),
            _interval(u["low"], u["high"], 3),
            f"{_f(c['estimated'])} {_interval(c['low'], c['high'], 3)}" if c["rows"] else "–",
            f"{_f(c['actual'])} (n {c['rows']})" if c["rows"] else "–",
            ("yes" if c["covered"] else "no") if c["rows"] else "–",
        )
    console.print(t)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gateway compare`."""
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="gateway base URL")
    parser.add_argument("--json", action="store_true", help="print the raw JSON document")
    parser.add_argument(
        "--against", type=int, metavar="VERSION", help="also show an earlier version beside the live one"
    )


def run(args: argparse.Namespace) -> int:
    """Fetch /compare and print it; exit 2 when the gateway cannot be reached or answers an error."""
    try:
        params = {"against": args.against} if getattr(args, "against", None) is not None else None
        r = httpx.get(f"{args.url.rstrip('/')}/compare", params=params, timeout=30)
    except httpx.HTTPError as exc:
        print(
            f"gateway compare: error: --url {args.url}: cannot reach the gateway ({type(exc).__name__})",
            file=sys.stderr,
        )
        return 2
    if r.status_code != 200:
        print(f"gateway compare: error: /compare answered {r.status_code}: {r.text[:300]}", file=sys.stderr)
        return 2
    if args.json:
        print(r.text)
        return 0
    render(r.json(), make_console())
    return 0
