"""One flat row per trial — what it trained, how it ended, how it compares — for tables, CSV/JSON exports and
``autokd.trials_dataframe`` (pandas, imported there on call)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...search import trial_record as tr
from .kd import recipe_facts
from .view import DirectionLike, StudyLike, baseline, duration_s, objective, student, view_of

__all__ = ["COLUMNS", "trial_rows"]

COLUMNS = ("number", "state", "value", "baseline", "description", "family", "losses", "scheme", "student",
           "temperature", "ce_weight", "lr", "gain_vs_kd_pts", "gain_vs_ce_pts", "val_std", "n_params", "epochs",
           "reason", "duration_s")


def trial_rows(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """One row per trial (by number) with the keys of :data:`COLUMNS`, plus ``value_<name>`` for the other
    objectives of a multi-objective study. ``gain_vs_*_pts`` are points (accuracy × 100) over the in-study
    baseline with the same student (None for the baselines themselves and for unfinished trials); ``reason``
    is why a trial was pruned or failed."""
    view = view_of(study, directions)
    names = view.names()
    rows = []
    for t in view.trials:
        tag = baseline(t)
        gains = view.gains(t) if tag is None and objective(t) is not None else {}
        facts = recipe_facts(t)
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name, "value": objective(t), "baseline": tag,
            "description": tr.description_of(t), "family": facts["family"], "losses": facts["losses"],
            "scheme": facts["scheme"], "student": student(t), "temperature": facts["temperature"],
            "ce_weight": facts["ce_weight"], "lr": facts["lr"],
            "gain_vs_kd_pts": None if gains.get("gain_vs_kd") is None else 100.0 * gains["gain_vs_kd"],
            "gain_vs_ce_pts": None if gains.get("gain_vs_ce") is None else 100.0 * gains["gain_vs_ce"],
            "val_std": tr.metric_of(t, tr.Key.VAL_ACC_STD), "n_params": tr.metric_of(t, tr.Key.PARAMS),
            "epochs": tr.metric_of(t, tr.Key.EPOCHS),
            "reason": tr.prune_reason_of(t) or tr.fail_reason_of(t), "duration_s": duration_s(t),
        }
        for i, name in enumerate(names[1:], 1):
            row[f"value_{name}"] = float(t.values[i]) if t.values and len(t.values) > i else None
        rows.append(row)
    return rows
