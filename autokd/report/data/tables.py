"""Tables of a study: every trial, the completed ones in order (history), the leaderboard, intermediate
curves and the headline summary. Plain rows (dicts), no plotly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ...search import trial_record as tr
from .view import (
    BASELINES,
    STATES,
    DirectionLike,
    StudyLike,
    baseline,
    duration_s,
    finite,
    objective,
    student,
    view_of,
)

__all__ = ["trials_table", "history", "leaderboard", "intermediate", "summary"]

_TABLE_BASE = ("number", "state", "value", "values", "duration_s", "datetime_start", "datetime_complete")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def trials_table(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """One row per trial: number, state, value (objective 0), values, duration_s, datetimes,
    ``params_<name>`` and ``user_attrs_<key>`` columns (nested dicts flattened with dots).

    Every row has the same keys (missing values are None).
    """
    view = view_of(study, directions)
    rows: list[dict[str, Any]] = []
    param_keys: set[str] = set()
    attr_keys: set[str] = set()
    for t in view.trials:
        params = {f"params_{k}": v for k, v in t.params.items()}
        attrs: dict[str, Any] = {}
        for k, v in t.user_attrs.items():
            _flatten(f"user_attrs_{k}", v, attrs)
        param_keys.update(params)
        attr_keys.update(attrs)
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": objective(t),
            "values": list(t.values) if t.values else None,
            "duration_s": duration_s(t),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            **params,
            **attrs,
        })
    keys = [*_TABLE_BASE, *sorted(param_keys), *sorted(attr_keys)]
    return [{k: row.get(k) for k in keys} for row in rows]


def history(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Completed trials in order: ``number``, ``value``, ``best`` (best so far, direction-aware),
    ``is_best`` (this trial set a new best), ``baseline`` (tag or None), ``student`` and ``description``."""
    view = view_of(study, directions)
    rows: list[dict[str, Any]] = []
    best: float | None = None
    for t in view.complete():
        v = objective(t)
        is_best = best is None or (v > best if view.maximize else v < best)
        if is_best:
            best = v
        rows.append({"number": t.number, "value": v, "best": best, "is_best": is_best, "baseline": baseline(t),
                     "student": student(t), "description": tr.description_of(t)})
    return rows


def leaderboard(study: StudyLike, k: int = 20, *, include_baselines: bool = True,
                directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Complete trials, best first (objective 0; ties by trial number), top ``k``.

    Rows: rank, number, value, values, baseline, is_baseline, gain_vs_ce, gain_vs_kd (improvement over the
    completed baseline with the same student; positive = better; None without one; accuracy units),
    description, val_seeds (per-seed validation accuracies), val_std, student, n_params, flops, latency_ms,
    epochs, train_time_s, seed, duration_s, params (dict). With ``include_baselines`` the baselines are
    appended (with their true rank) when they fall outside the top ``k``.
    """
    view = view_of(study, directions)
    ranked = view.ranked()
    chosen = [(i, t) for i, t in enumerate(ranked) if i < k or (include_baselines and baseline(t) in BASELINES)]
    rows = []
    for i, t in chosen:
        tag = baseline(t)
        seeds = t.user_attrs.get(tr.Key.VAL_ACC_SEEDS.value)
        rows.append({
            "rank": i + 1,
            "number": t.number,
            "value": objective(t),
            "values": list(t.values),
            "baseline": tag,
            "is_baseline": tag is not None,
            **view.gains(t),
            "description": tr.description_of(t),
            "val_seeds": [float(x) for x in seeds] if isinstance(seeds, list) else None,
            "val_std": tr.metric_of(t, tr.Key.VAL_ACC_STD),
            "student": student(t),
            "n_params": tr.metric_of(t, tr.Key.PARAMS),
            "flops": tr.metric_of(t, tr.Key.FLOPS),
            "latency_ms": tr.metric_of(t, tr.Key.LATENCY_MS),
            "epochs": tr.metric_of(t, tr.Key.EPOCHS),
            "train_time_s": tr.metric_of(t, tr.Key.TRAIN_TIME_S),
            "seed": tr.metric_of(t, tr.Key.SEED),
            "duration_s": duration_s(t),
            "params": dict(t.params),
        })
    return rows


def intermediate(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Trials that reported intermediate values: number, state, points (sorted ``(epoch, value)``),
    baseline, prune_reason. With several seeds per trial the points are the FIRST seed's curve (the one the
    pruner watches)."""
    view = view_of(study, directions)
    rows = []
    for t in view.trials:
        points = sorted((int(s), float(v)) for s, v in t.intermediate_values.items() if finite(v))
        if points:
            rows.append({"number": t.number, "state": t.state.name, "points": points, "baseline": baseline(t),
                         "prune_reason": tr.prune_reason_of(t), "description": tr.description_of(t)})
    return rows


def summary(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> dict[str, Any]:
    """Headline numbers of the search itself (in-study: baselines trained with the space's default optimiser).

    Keys: study_name, directions, objectives, multi_objective, n_trials, counts ({state: n} for every
    TrialState), best_value / best_trial / best_baseline (best complete trial on objective 0, baselines
    included), best_searched ({number, value, description, student, gain_vs_ce, gain_vs_kd} for the best
    non-baseline trial, or None), baselines ({"ce_only"|"kd": {number, state, value[, student]} or None: the
    ones trained with the best searched trial's student, else the first), teacher, dataset, space,
    autokd_version, total_epochs, total_train_time_s, pareto_size, duplicates, runs (the study's run register:
    [{name, worker, sampler_seed, trials_stored, started}] in the order the runs started).
    """
    from .analysis import pareto

    view = view_of(study, directions)
    counts = {s: 0 for s in STATES}  # unknown future states are appended
    for t in view.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    ranked = view.ranked()
    best = ranked[0] if ranked else None
    searched = next((t for t in ranked if baseline(t) is None), None)
    bases: dict[str, Any] = {}
    for tag in BASELINES:
        tagged = [t for t in view.trials if baseline(t) == tag]
        chosen = view.matched_baseline(searched, tag) if searched is not None else None
        if chosen is None:
            done = [t for t in tagged if t.state == TrialState.COMPLETE and objective(t) is not None]
            chosen = done[0] if done else (tagged[0] if tagged else None)
        bases[tag] = None if chosen is None else {
            "number": chosen.number, "state": chosen.state.name,
            "value": objective(chosen) if chosen.state == TrialState.COMPLETE else None,
            **({"student": tr.student_of(chosen)} if tr.student_of(chosen) else {})}
    best_searched = None
    if searched is not None:
        best_searched = {"number": searched.number, "value": objective(searched),
                         "description": tr.description_of(searched), "student": student(searched),
                         **view.gains(searched)}
    epochs = sum(int(e) for t in view.trials if (e := tr.metric_of(t, tr.Key.EPOCHS)) is not None)
    train_time = sum(s for t in view.trials if (s := tr.metric_of(t, tr.Key.TRAIN_TIME_S)) is not None)
    ua = view.user_attrs
    teacher = ua.get(tr.StudyKey.TEACHER.value)
    pareto_rows = pareto(view) if view.multi else []
    return {
        "study_name": ua.get(tr.StudyKey.STUDY_NAME.value) or view.study_name,
        "directions": [d.name.lower() for d in view.directions],
        "objectives": view.names(),
        "multi_objective": view.multi,
        "n_trials": len(view.trials),
        "counts": counts,
        "best_value": objective(best),
        "best_trial": best.number if best is not None else None,
        "best_baseline": baseline(best) if best is not None else None,
        "best_searched": best_searched,
        "baselines": bases,
        "teacher": dict(teacher) if isinstance(teacher, dict) else teacher,
        "dataset": ua.get(tr.StudyKey.DATASET.value),
        "space": ua.get(tr.StudyKey.SPACE.value),
        "autokd_version": ua.get(tr.StudyKey.AUTOKD_VERSION.value),
        "total_epochs": epochs,
        "total_train_time_s": train_time,
        "pareto_size": sum(r["on_front"] for r in pareto_rows) if view.multi else None,
        "maximize": view.directions[0] == StudyDirection.MAXIMIZE,
        "duplicates": duplicate_recipes(view.trials),
        "runs": [{"name": r.get("name"), "worker": r.get("worker"), "sampler_seed": r.get("sampler_seed"),
                  "trials_stored": r.get("trials_stored"), "started": r.get("started")} for r in tr.runs_of(view)],
    }


def duplicate_recipes(trials: Sequence[FrozenTrial]) -> list[list[int]]:
    """Groups (trial numbers) of finished searched trials that trained exactly the same recipe (seed and
    provenance aside): with several workers this should never happen, so the report flags it."""
    groups: dict[str, list[int]] = {}
    for t in trials:
        if tr.is_baseline(t) or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        d = tr.recipe_dict_of(t)
        if d is None:
            continue
        key = json.dumps({k: v for k, v in d.items() if k not in ("provenance", "seed")}, sort_keys=True)
        groups.setdefault(key, []).append(t.number)
    return sorted(g for g in groups.values() if len(g) > 1)
