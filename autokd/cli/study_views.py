"""``autokd status`` and ``autokd trials``: a stored study at a glance, and every trial as data."""

from __future__ import annotations

import csv
import io
import json
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from ._app import app
from ._common import clean, console, open_stored_study

__all__ = ["study_status", "Format"]

STUDY_ARG = typer.Argument(None, help="study YAML or its output folder (or use --storage/--study-name)")
STORAGE_OPT = typer.Option(None, "--storage", help="Optuna storage URL (e.g. postgresql://..., sqlite:///x.db)")
NAME_OPT = typer.Option(None, "--study-name", help="study name in --storage")


def study_status(st) -> dict[str, Any]:
    """Trials by state, the best searched trial with its gains over the in-study baselines (points), running
    trials and the elapsed time (first start to last finish, or to now while trials run)."""
    import datetime as dt

    from ..report import data
    from ..search import trial_record as tr

    s = data.summary(st)
    trials = st.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    running = [t for t in trials if t.state.name == "RUNNING"]
    elapsed = None
    if starts:
        end = dt.datetime.now() if running or not ends else max(ends)
        elapsed = (end - min(starts)).total_seconds()
    best = s["best_searched"]
    return {
        "study": s["study_name"], "n_trials": s["n_trials"],
        "counts": {k.lower(): v for k, v in s["counts"].items()},
        "baselines": sum(1 for t in trials if tr.is_baseline(t)),
        "best": None if best is None else {
            "number": best["number"], "value": best["value"], "description": best["description"],
            "gain_vs_kd_pts": None if best["gain_vs_kd"] is None else 100 * best["gain_vs_kd"],
            "gain_vs_ce_pts": None if best["gain_vs_ce"] is None else 100 * best["gain_vs_ce"]},
        "running": [{"number": t.number, "description": tr.description_of(t),
                     "started": t.datetime_start.isoformat() if t.datetime_start else None} for t in running],
        "elapsed_s": elapsed,
    }


@app.command()
@clean
def status(study: Optional[Path] = STUDY_ARG, storage: Optional[str] = STORAGE_OPT,
           study_name: Optional[str] = NAME_OPT,
           as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Where a study stands: trials by state, best so far with its gain, running trials, elapsed time."""
    st, _, _ = open_stored_study(study, storage, study_name)
    info = study_status(st)
    if as_json:
        print(json.dumps(info, indent=1))
        return
    counts = ", ".join(f"{v} {k}" for k, v in info["counts"].items() if v)
    console.print(f"study {info['study']}: {info['n_trials']} trials ({counts or 'none'}; "
                  f"{info['baselines']} of them baselines)", highlight=False, markup=False)
    b = info["best"]
    if b is not None:
        gains = ", ".join(f"{g:+.2f} pts vs {n}" for g, n in ((b["gain_vs_kd_pts"], "KD"), (b["gain_vs_ce_pts"], "CE-only"))
                          if g is not None)
        console.print(f"best so far: trial {b['number']} val {b['value']:.4f}" + (f" ({gains}, in-study)" if gains else ""),
                      highlight=False, markup=False)
        if b["description"]:
            console.print(f"  {b['description']}", highlight=False, markup=False, soft_wrap=True)
    for r in info["running"]:
        console.print(f"running: trial {r['number']} since {r['started']}  {r['description'] or ''}",
                      highlight=False, markup=False, soft_wrap=True)
    if info["elapsed_s"] is not None:
        console.print(f"elapsed: {info['elapsed_s'] / 60:.1f} min", highlight=False)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _text(rows: list[dict[str, Any]], fmt: Format) -> str:
    if fmt is Format.json:
        return json.dumps(rows, indent=1, default=str) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@app.command()
@clean
def trials(study: Optional[Path] = STUDY_ARG, storage: Optional[str] = STORAGE_OPT,
           study_name: Optional[str] = NAME_OPT,
           fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, csv or json"),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to this file")) -> None:
    """Every trial as one row: state, value, recipe, loss family, scheme, student, key params, gains vs the
    matched baselines (points), prune/fail reason, duration."""
    from ..files import atomic_write_text
    from ..report.data import trial_rows

    st, _, _ = open_stored_study(study, storage, study_name)
    rows = trial_rows(st)
    if fmt is not Format.table:
        text = _text(rows, fmt)
        if output is not None:
            atomic_write_text(output, text)
            console.print(f"{len(rows)} trials: {output}", highlight=False)
        else:
            print(text, end="")
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} trials")
    for col in ("#", "state", "value", "gain vs KD (pts)", "family", "scheme", "recipe / reason", "time"):
        table.add_column(col)
    for r in rows:
        gain = "-" if r["gain_vs_kd_pts"] is None else f"{r['gain_vs_kd_pts']:+.2f}"
        what = r["description"] or ""
        if r["baseline"]:
            what = f"baseline {r['baseline']}: {what}"
        if r["reason"]:
            what += f" [{r['reason']}]"
        table.add_row(str(r["number"]), r["state"].lower(), "-" if r["value"] is None else f"{r['value']:.4f}",
                      gain, r["family"] or "-", r["scheme"] or "-", escape(what),
                      "-" if r["duration_s"] is None else f"{r['duration_s']:.0f}s")
    if output is not None:
        from rich.console import Console

        from ..files import atomic_write_text

        rec = Console(file=io.StringIO(), width=200, soft_wrap=True)
        rec.print(table)
        atomic_write_text(output, rec.file.getvalue())
        console.print(f"{len(rows)} trials: {output}", highlight=False)
    else:
        console.print(table)
