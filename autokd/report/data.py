"""Pure data step of the study report: plain rows and dicts from an Optuna study (no plotly here).

Every public function takes an :class:`optuna.Study`, or a sequence of :class:`~optuna.trial.FrozenTrial`
plus ``directions`` (``StudyDirection`` or ``"maximize"``/``"minimize"``; inferred when omitted:
``[MAXIMIZE]`` single-objective, ``[MAXIMIZE, MINIMIZE]`` for (val_acc, params)). Objective 0 (validation
accuracy) drives history, leaderboard and importances.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "BASELINES",
    "STATES",
    "Importances",
    "history",
    "importances",
    "intermediate",
    "leaderboard",
    "objective_names",
    "parallel",
    "pareto",
    "proxy_vs_accuracy",
    "rank_correlation",
    "summary",
    "trials_table",
]

StudyLike = Union[Study, Sequence[FrozenTrial]]
DirectionLike = Union[StudyDirection, str]

BASELINES = ("ce", "kd")
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
IMPORTANCE_NOTE = "parameter importances need ≥2 completed trials with varying parameters"


@dataclass
class _View:
    trials: list[FrozenTrial]
    directions: list[StudyDirection]
    user_attrs: dict[str, Any] = field(default_factory=dict)
    study_name: str | None = None
    metric_names: list[str] | None = None
    study: Study | None = None

    @property
    def maximize(self) -> bool:
        return self.directions[0] == StudyDirection.MAXIMIZE

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1


def _direction(d: DirectionLike) -> StudyDirection:
    if isinstance(d, StudyDirection):
        return d
    name = str(d).strip().lower().removeprefix("studydirection.")
    if name == "maximize":
        return StudyDirection.MAXIMIZE
    if name == "minimize":
        return StudyDirection.MINIMIZE
    raise ValueError(f"unknown study direction {d!r} (expected 'maximize' or 'minimize')")


def _view(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> _View:
    if isinstance(study, Study):
        view = _View(
            trials=list(study.get_trials(deepcopy=False)),
            directions=list(study.directions),
            user_attrs=dict(study.user_attrs),
            study_name=study.study_name,
            metric_names=study.metric_names,
            study=study,
        )
    else:
        view = _View(trials=list(study), directions=[])
    if directions is not None:
        view.directions = [_direction(d) for d in directions]
    if not view.directions:
        n = max((len(t.values) for t in view.trials if t.values), default=1)
        view.directions = [StudyDirection.MAXIMIZE] + [StudyDirection.MINIMIZE] * (n - 1)
    view.trials.sort(key=lambda t: t.number)
    return view


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _obj(t: FrozenTrial) -> float | None:
    """Objective 0 of a trial, or None."""
    if not t.values:
        return None
    v = t.values[0]
    return float(v) if _finite(v) else None


def _complete(view: _View) -> list[FrozenTrial]:
    return [t for t in view.trials if t.state == TrialState.COMPLETE and _obj(t) is not None]


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def _gain(value: float | None, base: float | None, maximize: bool) -> float | None:
    """Improvement of ``value`` over ``base`` (positive = better, whatever the direction)."""
    if value is None or base is None:
        return None
    return value - base if maximize else base - value


def _baseline(t: FrozenTrial) -> str | None:
    b = t.user_attrs.get("baseline")
    return str(b).lower() if b else None


def _duration_s(t: FrozenTrial) -> float | None:
    d = t.duration
    return None if d is None else d.total_seconds()


def _baseline_trials(view: _View, complete_only: bool = True) -> dict[str, FrozenTrial | None]:
    """First completed trial per baseline tag (or, if ``complete_only`` is False, first of any state)."""
    out: dict[str, FrozenTrial | None] = {}
    for tag in BASELINES:
        tagged = [t for t in view.trials if _baseline(t) == tag]
        done = [t for t in tagged if t.state == TrialState.COMPLETE and _obj(t) is not None]
        out[tag] = done[0] if done else (None if complete_only or not tagged else tagged[0])
    return out


def _matched_base(view: _View, t: FrozenTrial, tag: str) -> float | None:
    """Objective value of the completed ``tag`` baseline trained with the same student as ``t`` (studies
    enqueue one per student choice), else of the first completed ``tag`` baseline."""
    done = [b for b in view.trials
            if _baseline(b) == tag and b.state == TrialState.COMPLETE and _obj(b) is not None]
    if not done:
        return None
    student = t.user_attrs.get("student")
    same = [b for b in done if student is not None and b.user_attrs.get("student") == student]
    return _obj((same or done)[0])


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def objective_names(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[str]:
    """Metric names if set on the study, else ``val_acc`` (+ ``params`` for the 2-objective convention)."""
    return _names(_view(study, directions))


def _names(view: _View) -> list[str]:
    n = len(view.directions)
    if view.metric_names and len(view.metric_names) == n:
        return list(view.metric_names)
    defaults = ["val_acc", "params"]
    return [defaults[i] if i < len(defaults) else f"objective_{i}" for i in range(n)]


_TABLE_BASE = ("number", "state", "value", "values", "duration_s", "datetime_start", "datetime_complete")


def trials_table(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """One row per trial: number, state, value (objective 0), values, duration_s, datetimes,
    ``params_<name>`` and ``user_attrs_<key>`` columns (nested dicts flattened with dots).

    Every row has the same keys (missing values are None).
    """
    view = _view(study, directions)
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
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": _obj(t),
                "values": list(t.values) if t.values else None,
                "duration_s": _duration_s(t),
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
                "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
                **params,
                **attrs,
            }
        )
    keys = [*_TABLE_BASE, *sorted(param_keys), *sorted(attr_keys)]
    return [{k: row.get(k) for k in keys} for row in rows]


def history(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Completed trials in order: ``number``, ``value``, ``best`` (best so far, direction-aware),
    ``is_best`` (this trial set a new best) and ``baseline`` (tag or None)."""
    view = _view(study, directions)
    rows: list[dict[str, Any]] = []
    best: float | None = None
    for t in _complete(view):
        v = _obj(t)
        assert v is not None
        is_best = best is None or _better(v, best, view.maximize)
        if is_best:
            best = v
        rows.append(
            {"number": t.number, "value": v, "best": best, "is_best": is_best, "baseline": _baseline(t)}
        )
    return rows


def _ranked(view: _View) -> list[FrozenTrial]:
    sign = -1.0 if view.maximize else 1.0
    return sorted(_complete(view), key=lambda t: (sign * (_obj(t) or 0.0), t.number))


def leaderboard(
    study: StudyLike,
    k: int = 20,
    *,
    include_baselines: bool = True,
    directions: Sequence[DirectionLike] | None = None,
) -> list[dict[str, Any]]:
    """Complete trials, best first (objective 0; ties by trial number), top ``k``.

    Rows: rank, number, value, values, baseline, is_baseline, gain_vs_ce, gain_vs_kd (improvement over the
    completed baseline with the same student if there is one, else the first; positive = better; None
    without it), student, n_params, flops, latency_ms, epochs,
    train_time_s, seed, duration_s, params (dict). With ``include_baselines`` the baselines are appended
    (with their true rank) when they fall outside the top ``k``.
    """
    view = _view(study, directions)
    ranked = _ranked(view)
    chosen = [
        (i, t) for i, t in enumerate(ranked) if i < k or (include_baselines and _baseline(t) in BASELINES)
    ]
    rows = []
    for i, t in chosen:
        v = _obj(t)
        ua = t.user_attrs
        tag = _baseline(t)
        rows.append(
            {
                "rank": i + 1,
                "number": t.number,
                "value": v,
                "values": list(t.values),
                "baseline": tag,
                "is_baseline": tag is not None,
                "gain_vs_ce": _gain(v, _matched_base(view, t, "ce"), view.maximize),
                "gain_vs_kd": _gain(v, _matched_base(view, t, "kd"), view.maximize),
                "student": ua.get("student", t.params.get("student")),
                "n_params": ua.get("params"),
                "flops": ua.get("flops"),
                "latency_ms": ua.get("latency_ms"),
                "epochs": ua.get("epochs"),
                "train_time_s": ua.get("train_time_s"),
                "seed": ua.get("seed"),
                "duration_s": _duration_s(t),
                "params": dict(t.params),
            }
        )
    return rows


def intermediate(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Trials that reported intermediate values: number, state, points (sorted ``(epoch, value)``),
    baseline, prune_reason."""
    view = _view(study, directions)
    rows = []
    for t in view.trials:
        points = sorted((int(s), float(v)) for s, v in t.intermediate_values.items() if _finite(v))
        if points:
            rows.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "points": points,
                    "baseline": _baseline(t),
                    "prune_reason": t.user_attrs.get("prune_reason"),
                }
            )
    return rows


class Importances(dict):
    """``{param: importance}`` (descending, sums to 1); empty with ``reason`` set when not computable."""

    def __init__(self, values: dict[str, float] | None = None, reason: str | None = None) -> None:
        super().__init__(values or {})
        self.reason = reason


def _varying(trials: list[FrozenTrial]) -> bool:
    seen: dict[str, set[str]] = {}
    for t in trials:
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(repr(v))
    return any(len(vals) > 1 for vals in seen.values())


def _importances_of(view: _View, trials: list[FrozenTrial] | None) -> dict[str, float]:
    """On ``view.study`` itself when ``trials`` is None, else on a temporary in-memory study."""
    study = view.study
    if trials is not None or study is None:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
        try:
            study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=view.directions)
        finally:
            optuna.logging.set_verbosity(verbosity)
        study.add_trials(trials if trials is not None else _complete(view))
    target = None
    if view.multi:  # PED-ANOVA with a target assumes lower is better
        target = (lambda t: -t.values[0]) if view.maximize else (lambda t: t.values[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = optuna.importance.get_param_importances(study, target=target)
    return {str(k): float(v) for k, v in res.items()}


def importances(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> Importances:
    """Parameter importances of objective 0 via ``optuna.importance.get_param_importances``.

    Returns an empty :class:`Importances` with ``reason`` when fewer than 2 completed trials, no parameter
    varies, or optuna raises. Retries without the baseline trials if the first attempt fails.
    """
    view = _view(study, directions)
    done = _complete(view)
    if len(done) < 2 or not _varying(done):
        return Importances(reason=IMPORTANCE_NOTE)
    searched = [t for t in done if _baseline(t) is None]
    attempts: list[list[FrozenTrial] | None] = [None]  # None: all trials of the study
    if len(searched) < len(done) and len(searched) >= 2:
        attempts.append(searched)
    err: Exception | None = None
    for trials in attempts:
        try:
            return Importances(_importances_of(view, trials))
        except Exception as e:  # noqa: BLE001 - any optuna failure becomes a note on the page
            err = e
    return Importances(reason=f"parameter importances could not be computed: {type(err).__name__}: {err}")


def _param_info(trials: list[FrozenTrial]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    dists: dict[str, Any] = {}
    observed: dict[str, list[str]] = {}
    for t in trials:
        for k, d in t.distributions.items():
            dists[k] = d  # the latest trial wins
            if isinstance(d, CategoricalDistribution):
                lab = str(t.params[k])
                if lab not in observed.setdefault(k, []):
                    observed[k].append(lab)
    names = sorted(dists)
    categorical: dict[str, list[str]] = {}
    log: list[str] = []
    for k in names:
        d = dists[k]
        if isinstance(d, CategoricalDistribution):
            labels = [str(c) for c in d.choices]
            categorical[k] = labels + [x for x in observed.get(k, []) if x not in labels]
        elif isinstance(d, (FloatDistribution, IntDistribution)) and d.log:
            log.append(k)
    return names, categorical, log


def parallel(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> dict[str, Any]:
    """Complete trials' params and objective 0, for parallel coordinates.

    Returns ``{"objective", "params": [names], "categorical": {name: [labels]}, "log": [names],
    "rows": [{"number", "value", "baseline", "params": {name: value or None}}]}``; categorical values are
    strings (their labels), missing (conditional) params are None.
    """
    view = _view(study, directions)
    done = _complete(view)
    names, categorical, log = _param_info(done)
    rows = []
    for t in done:
        params = {}
        for k in names:
            if k not in t.params:
                params[k] = None
            else:
                params[k] = str(t.params[k]) if k in categorical else t.params[k]
        rows.append({"number": t.number, "value": _obj(t), "baseline": _baseline(t), "params": params})
    return {
        "objective": _names(view)[0],
        "params": names,
        "categorical": categorical,
        "log": log,
        "rows": rows,
    }


def proxy_vs_accuracy(
    study: StudyLike, directions: Sequence[DirectionLike] | None = None
) -> list[dict[str, Any]]:
    """Trials with both a zero-cost ``proxy_score`` and a validation accuracy (``user_attrs['val_acc']``,
    else objective 0 of a complete trial): number, state, proxy_score, val_acc, baseline."""
    view = _view(study, directions)
    rows = []
    for t in view.trials:
        proxy = t.user_attrs.get("proxy_score")
        acc = t.user_attrs.get("val_acc")
        if not _finite(acc) and t.state == TrialState.COMPLETE:
            acc = _obj(t)
        if _finite(proxy) and _finite(acc):
            rows.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "proxy_score": float(proxy),
                    "val_acc": float(acc),
                    "baseline": _baseline(t),
                }
            )
    return rows


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties averaged); None with < 3 points or a constant series."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[StudyDirection]) -> bool:
    strictly = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == StudyDirection.MAXIMIZE:
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            strictly = True
    return strictly


def pareto(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Multi-objective only (else ``[]``): complete trials with number, values, on_front (non-dominated),
    baseline, student. Rows ordered by trial number."""
    view = _view(study, directions)
    if not view.multi:
        return []
    done = [
        t
        for t in view.trials
        if t.state == TrialState.COMPLETE
        and t.values
        and len(t.values) == len(view.directions)
        and all(_finite(v) for v in t.values)
    ]
    rows = []
    for t in done:
        front = not any(_dominates(o.values, t.values, view.directions) for o in done if o is not t)
        rows.append(
            {
                "number": t.number,
                "values": [float(v) for v in t.values],
                "on_front": front,
                "baseline": _baseline(t),
                "student": t.user_attrs.get("student", t.params.get("student")),
            }
        )
    return rows


def summary(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> dict[str, Any]:
    """Headline numbers.

    Keys: study_name, directions, objectives, multi_objective, n_trials, counts ({state: n} for every
    TrialState), best_value / best_trial / best_baseline (best complete trial on objective 0, baselines
    included), best_searched ({number, value, gain_vs_ce, gain_vs_kd} for the best non-baseline trial, or
    None), baselines ({"ce"|"kd": {number, state, value} or None}), teacher, dataset, space,
    autokd_version, total_epochs (sum of ``user_attrs['epochs']``), total_train_time_s, pareto_size.
    """
    view = _view(study, directions)
    counts = {s: 0 for s in STATES}  # unknown future states are appended
    for t in view.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    ranked = _ranked(view)
    best = ranked[0] if ranked else None
    any_bases = _baseline_trials(view, complete_only=False)
    searched = next((t for t in ranked if _baseline(t) is None), None)
    if searched is not None and searched.user_attrs.get("student") is not None:
        # show the baselines trained with the best searched trial's student (one per student choice)
        for tag in BASELINES:
            same = [b for b in view.trials if _baseline(b) == tag and b.state == TrialState.COMPLETE
                    and b.user_attrs.get("student") == searched.user_attrs["student"]]
            if same:
                any_bases[tag] = same[0]
    base_values = {
        tag: (_obj(t) if t is not None and t.state == TrialState.COMPLETE else None)
        for tag, t in any_bases.items()
    }
    best_searched = None
    if searched is not None:
        v = _obj(searched)
        best_searched = {
            "number": searched.number,
            "value": v,
            "gain_vs_ce": _gain(v, _matched_base(view, searched, "ce"), view.maximize),
            "gain_vs_kd": _gain(v, _matched_base(view, searched, "kd"), view.maximize),
        }
    baselines = {
        tag: None if t is None else {"number": t.number, "state": t.state.name, "value": base_values[tag],
                                     **({"student": t.user_attrs["student"]} if t.user_attrs.get("student") else {})}
        for tag, t in any_bases.items()
    }
    epochs = sum(int(e) for t in view.trials if _finite(e := t.user_attrs.get("epochs")))
    train_time = sum(float(s) for t in view.trials if _finite(s := t.user_attrs.get("train_time_s")))
    teacher = view.user_attrs.get("teacher")
    pareto_rows = pareto(view.trials, view.directions) if view.multi else []
    return {
        "study_name": view.user_attrs.get("study_name") or view.study_name,
        "directions": [d.name.lower() for d in view.directions],
        "objectives": _names(view),
        "multi_objective": view.multi,
        "n_trials": len(view.trials),
        "counts": counts,
        "best_value": _obj(best) if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "best_baseline": _baseline(best) if best is not None else None,
        "best_searched": best_searched,
        "baselines": baselines,
        "teacher": dict(teacher) if isinstance(teacher, dict) else teacher,
        "dataset": view.user_attrs.get("dataset"),
        "space": view.user_attrs.get("space"),
        "autokd_version": view.user_attrs.get("autokd_version"),
        "total_epochs": epochs,
        "total_train_time_s": train_time,
        "pareto_size": sum(r["on_front"] for r in pareto_rows) if view.multi else None,
    }
