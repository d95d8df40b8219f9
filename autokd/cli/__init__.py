"""The ``autokd`` command line: parse -> call the API -> print. User mistakes: one line, exit code 2.

Start-up stays light: ``autokd --help``, ``--version`` and ``status`` import neither torch nor plotly (each
command imports what it needs when it runs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..errors import AutoKDError, ConfigError
from . import catalog, study_views, teacher  # noqa: F401 - registers list, space, status, trials, teacher
from ._app import app, space_app
from ._common import clean as _clean
from ._common import console, err_console, open_stored_study, terminate_as_interrupt
from ._common import with_device as _with_device
from .evidence import print_evidence
from .progress import RichProgress

__all__ = ["app", "space_app", "main", "console", "RichProgress", "print_evidence"]

STUDY_OR_FOLDER = typer.Argument(None, help="study YAML or its output folder (or use --storage/--study-name)")
STORAGE_OPT = study_views.STORAGE_OPT
NAME_OPT = study_views.NAME_OPT


@app.command()
@_clean
def search(
    study: Path = typer.Argument(..., help="study YAML (e.g. studies/digits.yaml)"),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", min=1,
                                         help="searched trials in total; the baselines (CE-only and KD per "
                                              "student) are run in addition"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="stop after this many seconds"),
    device: Optional[str] = typer.Option(None, "--device", help="override the study's device (auto, cpu, cuda:N); "
                                         "run one worker per GPU on a shared storage to use many GPUs"),
    worker: Optional[str] = typer.Option(None, "--worker", help="this worker's name when several share the "
                                         "study (seeds its sampler; default: the run's place in the study's run "
                                         "register, so one worker's study is reproducible)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads of this process "
                                          "(with N workers on one machine: cores / N)"),
    allow_changed: bool = typer.Option(False, "--allow-changed", help="resume although the study's teacher, "
                                       "data or space changed (recorded; the report separates the trials)"),
) -> None:
    """Run (or resume) a study: baselines first, then the search; writes best_recipe.yaml.

    Several workers may run the same command on one study (same machine: SQLite or journal storage; many
    machines: PostgreSQL): the study ends with exactly the requested trials and nothing runs twice."""
    from ..api import load_study_config, run_search
    from ..search.export import best_trial

    cfg = _with_device(load_study_config(study), device)
    if threads is not None:
        import os

        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    t0 = time.time()
    with terminate_as_interrupt(), RichProgress(seeds=cfg.search.seeds_per_trial) as prog:
        st = run_search(cfg, trials=trials, timeout=timeout, progress=prog, log=console.print, worker=worker,
                        allow_changed=allow_changed)
    best = best_trial(st)
    console.print(f"search done in {time.time() - t0:.0f}s; storage: {cfg.storage_url}", highlight=False)
    if best is not None:
        from ..search import trial_record as tr

        console.print(f"best: trial {best.number} val acc {best.values[0]:.4f} — "
                      f"{tr.description_of(best) or ''}", markup=False, soft_wrap=True)
        recipe = cfg.study_dir / "best_recipe.yaml"
        console.print(f"best recipe: {recipe}", highlight=False, soft_wrap=True)
        console.print(f"next: autokd train {recipe} --study {study}   (like-for-like retrain, "
                      f"{cfg.final.seeds} seeds, beside KD and CE-only)", highlight=False, markup=False, soft_wrap=True)
        console.print(f"next: autokd report {study}", highlight=False, markup=False, soft_wrap=True)


@app.command()
@_clean
def report(
    study: Optional[Path] = STUDY_OR_FOLDER,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML path (default: <study>/report.html)"),
    storage: Optional[str] = STORAGE_OPT,
    study_name: Optional[str] = NAME_OPT,
) -> None:
    """Write a self-contained HTML report (opens offline)."""
    from ..api import make_report

    if storage is None and study_name is None:
        path = make_report(study, output)
    else:
        from ..report import build_report

        st, _, _ = open_stored_study(study, storage, study_name)
        path = build_report(st, output or Path(f"{study_name}-report.html"), title=f"autokd study {study_name}")
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command()
@_clean
def export(
    study: Optional[Path] = STUDY_OR_FOLDER,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="recipe path (default: <study>/best_recipe.yaml)"),
    storage: Optional[str] = STORAGE_OPT,
    study_name: Optional[str] = NAME_OPT,
) -> None:
    """Export the best recipe (with provenance) as YAML."""
    from ..api import export_recipe

    if storage is None and study_name is None:
        path = export_recipe(study, output)
    else:
        from ..search import trial_record as tr
        from ..search.export import best_trial

        st, _, _ = open_stored_study(study, storage, study_name)
        best = best_trial(st)
        recipe = tr.recipe_of(best) if best is not None else None
        if recipe is None:
            raise ConfigError(f"study {study_name!r} has no completed searched trial with a recorded recipe")
        path = recipe.dump(output or Path(f"{study_name}-best_recipe.yaml"))
    console.print(f"recipe: {path}", highlight=False, soft_wrap=True)


@app.command()
@_clean
def train(
    recipe: Path = typer.Argument(..., help="a recipe YAML (e.g. from autokd export)"),
    study: Optional[Path] = typer.Option(None, "--study", help="study YAML for data and teacher"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="number of seeds (default: study's final.seeds)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="epochs (default: the recipe's)"),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="skip the CE-only and KD baselines"),
    device: Optional[str] = typer.Option(None, "--device", help="override the study's device"),
) -> None:
    """Retrain a recipe with several seeds; print test accuracy beside the KD and CE-only baselines."""
    from ..api import load_study_config, train_recipe
    from ..recipe import Recipe
    from ..train.checks import check_recipe

    r = check_recipe(Recipe.load(recipe), source=str(recipe))  # names and values, before anything trains
    cfg = None
    if study is not None or device is not None:
        src = study or getattr(r.provenance, "study_file", None)
        if src is None:
            raise ConfigError("train: the recipe records no study; pass --study STUDY.yaml")
        cfg = _with_device(load_study_config(src), device)
    with terminate_as_interrupt():  # SIGTERM like Ctrl-C: final/ keeps its previous content
        res = train_recipe(r, study=cfg, seeds=seeds, epochs=epochs, baselines=not no_baselines,
                           log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True))
    where = study or getattr(r.provenance, "study_file", None)
    print_evidence({**res.to_json(), "_path": str(res.path) if res.path else None},
                   next_steps=[f"autokd report {where}   (the retrain becomes the report's headline)"] if where else [])


@app.command()
@_clean
def proxies(
    study: Path = typer.Argument(..., help="study YAML (data and teacher)"),
    space: Optional[Path] = typer.Option(None, "--space", help="search space of candidate students "
                                         "(default: the study's)"),
    n: int = typer.Option(64, "--n", min=1, help="number of candidate students"),
    proxy: Optional[list[str]] = typer.Option(None, "--proxy", help="proxy name (repeatable; default: all)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="CSV path (default: <study>/proxies.csv)"),
) -> None:
    """Score candidate students training-free with zero-cost proxies; print a ranked table, write CSV."""
    from rich.table import Table

    from .. import proxies as px
    from ..api import load_study_config
    from ..context import StudyContext
    from ..search.space import SearchSpace
    from ..search.student_ranking import rank_rows, score_candidates, write_csv

    cfg = load_study_config(study)
    names = list(proxy) if proxy else px.names()
    for name in names:
        px.PROXIES.canonical(name, where="--proxy")
    need_teacher = any(px.needs_teacher(name) for name in names)
    sp = SearchSpace.load(space or cfg.space_path)
    ctx = StudyContext.open(cfg, log=console.print, need_teacher=need_teacher)
    with console.status("scoring candidates") as status:
        rows = score_candidates(ctx, sp, n=n, proxies=names, seed=cfg.seed,
                                progress=lambda i, total, row: status.update(f"scored {i}/{total}: "
                                                                             f"{escape(row['student'])}"))
    ranked = rank_rows(rows, names[0])
    table = Table(title=f"{len(rows)} candidate students ranked by {names[0]} (higher = predicted better)")
    table.add_column("#")
    table.add_column("student")
    table.add_column("params", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for i, r in enumerate(ranked, 1):
        table.add_row(str(i), escape(r["student"]), f"{r['params']:,}",
                      *[f"{r.get(name, float('nan')):.4g}" for name in names])
    console.print(table)
    path = write_csv(ranked, output or cfg.study_dir / "proxies.csv")
    console.print(f"csv: {path}")


def main() -> None:
    try:
        app()
    except AutoKDError as e:  # pragma: no cover - commands already catch these
        err_console.print(f"error: {e}", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
