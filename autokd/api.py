"""The high-level Python API: the same four steps as the CLI (search, report, export, train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import StudyConfig
from .errors import ConfigError
from .recipe import Recipe

__all__ = ["load_study_config", "run_search", "make_report", "export_recipe", "train_recipe", "trials_dataframe"]


def load_study_config(study: str | Path | StudyConfig) -> StudyConfig:
    """Accept a study YAML path, a study output folder (``studies/<name>/``) or a loaded config."""
    if isinstance(study, StudyConfig):
        return study
    p = Path(study)
    if p.is_dir():
        for cand in (p.with_suffix(".yaml"), p / "study.yaml", p.parent / f"{p.name}.yaml"):
            if cand.is_file():
                return StudyConfig.load(cand)
        raise ConfigError(f"{p}: a folder, but no study file {p.with_suffix('.yaml')} next to it")
    return StudyConfig.load(p)


def run_search(study, *, trials: int | None = None, timeout: float | None = None, progress=None, log=print,
               worker: str | int | None = None, allow_changed: bool = False):
    """Run or resume a study; returns the ``optuna.Study``. Writes ``best_recipe.yaml`` in the study folder.
    Several processes may run it on one study at once (``worker`` names each and seeds its sampler; default:
    the run's place in the study's run register)."""
    from .search.run import run_search as _run

    return _run(load_study_config(study), trials=trials, timeout=timeout, progress=progress, log=log, worker=worker,
                allow_changed=allow_changed)


def make_report(study, path: str | Path | None = None) -> Path:
    """Write the self-contained Plotly report (``report.html`` in the study folder by default)."""
    from .report import build_report
    from .report.data import train_command
    from .search.backends.storage import load_study

    cfg = load_study_config(study)
    st = load_study(cfg)
    return build_report(st, Path(path) if path else cfg.study_dir / "report.html", title=f"autokd study {cfg.name}",
                        final=cfg.study_dir / "final" / "results.json",
                        command=train_command(cfg.source, cfg.study_dir / "best_recipe.yaml"))


def export_recipe(study, path: str | Path | None = None) -> Path:
    """Export the best trial's recipe (with provenance) as YAML."""
    from .search.backends.storage import load_study
    from .search.export import export_best

    cfg = load_study_config(study)
    return export_best(cfg, load_study(cfg), Path(path) if path else cfg.study_dir / "best_recipe.yaml")


def train_recipe(recipe: str | Path | Recipe, *, study=None, seeds: int | None = None, epochs: int | None = None,
                 baselines: bool = True, log=print) -> Any:
    """Retrain a recipe for several seeds beside its CE-only and KD baselines (with the recipe's optimiser,
    and with the study space's default optimiser when it differs); returns a ``FinalResult``.

    The study (for data and teacher) defaults to the one recorded in the recipe's provenance.
    """
    from .context import StudyContext
    from .retrain import retrain
    from .search.run import open_space
    from .train import check_recipe

    r = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe)
    r = check_recipe(r, source=str(recipe) if not isinstance(recipe, Recipe) else None)
    if study is None:
        src = getattr(r.provenance, "study_file", None)
        if not src:
            raise ConfigError("train: the recipe records no study; pass --study STUDY.yaml")
        study = src
    cfg = load_study_config(study)
    default_optim = open_space(cfg).default_optim() if baselines else None  # before the teacher: bad YAML fails fast
    ctx = StudyContext.open(cfg, log=log)
    return retrain(ctx, r, seeds=seeds or cfg.final.seeds, epochs=epochs or cfg.final.epochs,
                   out_dir=cfg.study_dir / "final", log=log, baselines=baselines, default_optim=default_optim)


def trials_dataframe(study: Any) -> Any:
    """One row per trial as a ``pandas.DataFrame`` (columns: :data:`autokd.report.data.COLUMNS` — number,
    state, value, baseline, recipe description, loss family (the loss registry's level), losses, scheme,
    student, temperature, CE weight, learning rate, gains over the matched in-study baselines in points,
    validation std over seeds, parameters, epochs, prune/fail reason, duration — plus ``value_<name>`` for
    further objectives). ``study``: an ``optuna.Study``, a study YAML, its output folder or a ``StudyConfig``."""
    import pandas as pd

    from .report.data import COLUMNS, trial_rows

    if not hasattr(study, "get_trials"):
        from .search.backends.storage import load_study

        study = load_study(load_study_config(study))
    rows = trial_rows(study)
    columns = list(COLUMNS) + [k for k in (rows[0] if rows else {}) if k not in COLUMNS]
    return pd.DataFrame(rows, columns=columns).set_index("number", drop=False)
