"""``autokd teacher check``: is the study's teacher distillable?"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app
from ._common import clean, console, with_device

__all__ = ["teacher_app"]

teacher_app = typer.Typer(no_args_is_help=True, help="Inspect the study's teacher.")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("check")
@clean
def teacher_check(
    study: Path = typer.Argument(..., help="study YAML (data, teacher, and the space's first student)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="paired seeds of each run"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="epochs (default: the search's budget)"),
    device: Optional[str] = typer.Option(None, "--device", help="override the study's device"),
) -> None:
    """Is the teacher distillable? Train the student baseline CE-only and with plain KD over paired seeds."""
    import json
    import statistics

    from rich.table import Table

    from ..api import load_study_config
    from ..context import StudyContext
    from ..files import atomic_write_text
    from ..search.space import SearchSpace
    from ..teacher_check import check_teacher

    cfg = with_device(load_study_config(study), device)
    search = cfg.search
    recipe = SearchSpace.load(cfg.space_path).baseline("ce_only")
    ctx = StudyContext.open(cfg, log=console.print)
    res = check_teacher(ctx, recipe, seeds=seeds, epochs=epochs or search.epochs, log=console.print,
                        temperature=search.baseline_temperature, kd_weight=search.baseline_kd_weight,
                        ce_weight=search.baseline_ce_weight)
    table = Table(title=f"{recipe.student.label()} for {res.epochs} epochs: val accuracy over {len(res.seeds)} "
                        f"seed(s)")
    for col in ("run", "val acc (mean ± std)", "per seed"):
        table.add_column(col)
    for label, v in (("CE-only", res.ce_only), (f"KD (T={res.temperature:g})", res.kd)):
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        table.add_row(label, f"{statistics.fmean(v):.4f} ± {std:.4f}", " ".join(f"{a:.4f}" for a in v))
    d = res.difference
    table.add_row("KD − CE-only (paired)", f"{d.mean:+.4f} ± {d.sd:.4f}", f"95% interval [{d.low:+.4f}, {d.high:+.4f}]")
    console.print(table)
    for line in res.explanation():
        console.print(line, markup=False, highlight=False)
    path = cfg.study_dir / "teacher_check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(res.to_dict(), indent=1))
    console.print(f"results: {path}")
