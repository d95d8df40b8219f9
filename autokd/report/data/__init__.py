"""Pure data step of the study report: plain rows and dicts from an Optuna study (no plotly here), one module
per job: :mod:`.view` (the study view and shared readers), :mod:`.tables` (trials, history, leaderboard,
summary), :mod:`.frame` (one flat row per trial), :mod:`.analysis` (importances, parallel coordinates, Pareto, proxy), :mod:`.kd` (what each trial
distilled and its gains), :mod:`.evidence` (the like-for-like retrain, ``final/results.json``)."""

from __future__ import annotations

import optuna

from .analysis import (
    IMPORTANCE_METHOD,
    Importances,
    importances,
    parallel,
    pareto,
    proxy_vs_accuracy,
    rank_correlation,
    searched_study,
    short_label,
)
from .evidence import IN_STUDY_NOTE, evidence, load_final, stronger_note, train_command
from .frame import COLUMNS, trial_rows
from .kd import kd_rows, loss_level, recipe_facts
from .tables import history, intermediate, leaderboard, summary, trials_table
from .view import BASELINES, STATES, objective_names, view_of

__all__ = [
    "BASELINES",
    "COLUMNS",
    "IMPORTANCE_METHOD",
    "IN_STUDY_NOTE",
    "STATES",
    "Importances",
    "evidence",
    "history",
    "importances",
    "intermediate",
    "kd_rows",
    "leaderboard",
    "load_final",
    "stronger_note",
    "loss_level",
    "objective_names",
    "optuna",
    "parallel",
    "pareto",
    "proxy_vs_accuracy",
    "rank_correlation",
    "recipe_facts",
    "searched_study",
    "short_label",
    "summary",
    "train_command",
    "trial_rows",
    "trials_table",
    "view_of",
]
