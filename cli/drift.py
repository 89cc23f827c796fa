"""The /drift document as a terminal table: one row per input column, worst first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _largest_move(column: dict[str, Any]) -> str:
    """The bin whose share moved most between the reference and the live rows."""
    bins = [b for b in column["bins"] if b["live"] is not None]
    if not bins:
        return "–"
    b = max(bins, key=lambda b: abs(b["live"] - b["reference"]))
    return f"{b['bin']}: {b['reference']:.1%} -> {b['live']:.1%}"


def _p(value: float) -> str:
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def render(doc: dict[str, Any], console: Console) -> None:
    """Per column PSI, status, test p-value and the bin that moved most."""
    if not doc.get("available"):
        console.print(f"input drift: not available ({doc.get('reason', 'no reason given')})", markup=False)
        return
    window = doc["window_s"]
    t = Table(
        title=f"Input drift: {doc['model']} v{doc['version']}, last {window / 60:g} min, "
        f"{doc['rows']} live rows vs {doc['reference']['rows']} {doc['reference']['split']} rows"
    )
    for name in ("column", "kind", "PSI", "status", "test", "p-value", "largest move"):
        t.add_column(name)
    for c in sorted(doc["columns"], key=lambda c: -c["psi"]):
        t.add_row(
            c["column"],
            c["kind"],
            f"{c['psi']:.3f}",
            c["status"],
            c["test"],
            _p(c["p_value"]),
            _largest_move(c),
        )
    console.print(t)
    drifted = doc["drifted"]
    console.print(
        f"drifted (PSI >= {doc['thresholds']['psi_drifted']}): {', '.join(drifted) if drifted else 'none'}",
        markup=False,
    )
