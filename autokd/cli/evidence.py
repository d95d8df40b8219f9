"""Printing the like-for-like retrain (``final/results.json``) the same way the report shows it."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from ._common import console

__all__ = ["print_evidence"]


def print_evidence(final: dict[str, Any], *, next_steps: list[str] | None = None) -> None:
    """The run table (test accuracy mean ± std, n, fidelity), the paired comparisons with their verdicts, the
    split sizes, then ``next_steps``."""
    from ..report.data import evidence, stronger_note

    ev = evidence(final)
    if ev is None:
        console.print("no results to show")
        return
    if ev.get("description"):
        console.print(f"recipe: {ev['description']}", highlight=False, markup=False, soft_wrap=True)
    table = Table(title=f"test accuracy over {len(ev['seeds'])} seed(s), points")
    for col in ("run", "test acc (mean ± std)", "n", "top-1 agreement", "KL(p_t‖p_s)"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in ev["runs"]:
        table.add_row(r["name"], f"{r['mean']:.2f} ± {r['std']:.2f}", str(r["n"]),
                      "-" if r["agreement"] is None else f"{r['agreement']:.4f}",
                      "-" if r["kl"] is None else f"{r['kl']:.4f}")
    console.print(table)
    if ev["comparisons"]:
        comp = Table(title="paired difference (seed i with seed i), Student t")
        for col in ("comparison", "mean (points)", f"{int(round(100 * ev['comparisons'][0]['confidence']))} % interval",
                    "verdict"):
            comp.add_column(col)
        for c in ev["comparisons"]:
            ci = f"[{c['low']:+.2f}, {c['high']:+.2f}]" if c["low"] is not None else "one seed: none"
            comp.add_row(f"recipe − {c['name']}", f"{c['mean']:+.2f}", ci, escape(c["verdict"]))
        console.print(comp)
    for x in ev.get("stronger") or []:
        console.print(f"[bold yellow]note:[/] {escape(stronger_note(x))}", highlight=False, soft_wrap=True)
    sizes = ev.get("sizes") or {}
    if sizes:
        point = f" (one test image = {ev['test_point']:.2f} points)" if ev.get("test_point") else ""
        console.print(f"validation set {sizes.get('val', '?')} images, test set {sizes.get('test', '?')} images{point}",
                      highlight=False)
    if ev.get("path"):
        console.print(f"results: {ev['path']}", highlight=False, soft_wrap=True)
    for step in next_steps or []:
        console.print(f"next: {step}", highlight=False, markup=False, soft_wrap=True)
