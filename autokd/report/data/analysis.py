"""Analyses of the searched trials: parameter importances, parallel coordinates, Pareto front, proxy score vs
accuracy. Baseline trials carry no parameters, so analyses that intersect parameter sets (Optuna's importance
evaluators, contour, terminator) run on :func:`searched_study`, an in-memory copy without them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ...search import trial_record as tr
from .view import DirectionLike, StudyLike, View, baseline, finite, objective, student, view_of

__all__ = ["Importances", "IMPORTANCE_METHOD", "searched_study", "importances", "parallel", "pareto",
           "proxy_vs_accuracy", "rank_correlation"]

IMPORTANCE_NOTE = "parameter importances need ≥2 completed searched trials with varying parameters"
#: the evaluator passed to ``optuna.importance.get_param_importances`` (named so on the page)
IMPORTANCE_METHOD = "PED-ANOVA (Watanabe et al., IJCAI 2023)"


def searched_study(study: StudyLike, directions: Sequence[DirectionLike] | None = None, *,
                   complete_only: bool = False) -> Study:
    """An in-memory study holding the searched (non-baseline) trials only, with the original trial numbers
    kept in the ``number`` order; Optuna's visualisations and importance evaluators work on it."""
    view = view_of(study, directions)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        out = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=view.directions,
                                  study_name=view.study_name or "searched")
    finally:
        optuna.logging.set_verbosity(verbosity)
    keep = [t for t in view.trials if baseline(t) is None and t.state != TrialState.RUNNING
            and t.state != TrialState.WAITING and (not complete_only or t.state == TrialState.COMPLETE)]
    out.add_trials(keep)
    return out


class Importances(dict):
    """``{param: importance}`` (descending, sums to 1); empty with ``reason`` set when not computable.
    ``method`` names the evaluator and ``n`` the number of trials it saw."""

    def __init__(self, values: dict[str, float] | None = None, reason: str | None = None, *,
                 method: str = IMPORTANCE_METHOD, n: int = 0) -> None:
        super().__init__(values or {})
        self.reason = reason
        self.method = method
        self.n = n


def _varying(trials: list[FrozenTrial]) -> bool:
    seen: dict[str, set[str]] = {}
    for t in trials:
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(repr(v))
    return any(len(vals) > 1 for vals in seen.values())


def importances(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> Importances:
    """Parameter importances of objective 0 via ``optuna.importance.get_param_importances`` on the completed
    searched trials (baselines have no parameters). Returns an empty :class:`Importances` with ``reason``
    when fewer than 2 such trials, no parameter varies, or Optuna raises."""
    view = view_of(study, directions)
    done = [t for t in view.complete() if baseline(t) is None]
    if len(done) < 2 or not _varying(done):
        return Importances(reason=IMPORTANCE_NOTE, n=len(done))
    target = None
    if view.multi:  # PED-ANOVA with a target assumes lower is better
        target = (lambda t: -t.values[0]) if view.maximize else (lambda t: t.values[0])
    try:
        st = searched_study(view, complete_only=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = optuna.importance.get_param_importances(
                st, target=target, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except Exception as e:  # noqa: BLE001 - any optuna failure becomes a note on the page
        return Importances(reason=f"parameter importances could not be computed: {type(e).__name__}: {e}",
                           n=len(done))
    return Importances({str(k): float(v) for k, v in res.items()}, n=len(done))


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


def short_label(name: str, taken: Sequence[str] = ()) -> str:
    """A readable axis label for a dotted parameter name: its last two parts (``terms.0.kd.temperature`` ->
    ``kd.temperature``; list indices skipped: ``terms.0.loss`` -> ``terms.loss``), longer when that would clash
    with ``taken``."""
    parts = [p for p in name.split(".") if not p.isdigit()] or name.split(".")
    for n in range(min(2, len(parts)), len(parts) + 1):
        label = ".".join(parts[-n:])
        if label not in taken:
            return label
    return name


def parallel(study: StudyLike, directions: Sequence[DirectionLike] | None = None, *,
             top_k: int | None = None, imp: Importances | None = None) -> dict[str, Any]:
    """Complete trials' params and objective 0, for parallel coordinates.

    Returns ``{"objective", "params": [names], "labels": {name: short label}, "categorical": {name: [labels]},
    "log": [names], "rows": [{"number", "value", "baseline", "params": {name: value or None}}]}``; categorical
    values are strings (their labels), missing (conditional) params are None. With ``top_k`` only the ``top_k``
    most important parameters (``imp``, computed when omitted) are kept, most important first.
    """
    view = view_of(study, directions)
    done = view.complete()
    names, categorical, log = _param_info(done)
    if top_k is not None and len(names) > top_k:
        imp = imp if imp is not None else importances(view)
        ranked = [k for k in imp if k in names] or names
        names = ranked[:top_k]
        categorical = {k: v for k, v in categorical.items() if k in names}
        log = [k for k in log if k in names]
    labels: dict[str, str] = {}
    for k in names:
        labels[k] = short_label(k, list(labels.values()))
    rows = []
    for t in done:
        params = {k: None if k not in t.params else (str(t.params[k]) if k in categorical else t.params[k])
                  for k in names}
        rows.append({"number": t.number, "value": objective(t), "baseline": baseline(t), "params": params})
    return {"objective": view.names()[0], "params": names, "labels": labels, "categorical": categorical,
            "log": log, "rows": rows}


def proxy_vs_accuracy(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """COMPLETED trials with both a zero-cost ``proxy_score`` and a final validation accuracy (a pruned
    trial's accuracy is a partial value, so it is left out): number, proxy, proxy_score, val_acc, baseline."""
    view = view_of(study, directions)
    rows = []
    for t in view.complete():
        proxy = tr.proxy_score_of(t)
        acc = tr.metric_of(t, tr.Key.VAL_ACC)
        acc = acc if acc is not None else objective(t)
        if proxy is not None and acc is not None:
            name = t.user_attrs.get(tr.Key.PROXY.value)
            rows.append({"number": t.number, "state": t.state.name, "proxy": None if name is None else str(name),
                         "proxy_score": proxy, "val_acc": acc, "baseline": baseline(t)})
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


def pareto(study: StudyLike | View, directions: Sequence[DirectionLike] | None = None) -> list[dict[str, Any]]:
    """Accuracy vs size. Multi-objective studies: complete trials with their values; single-objective ones:
    (objective 0, ``params`` attribute) of the complete trials that recorded their size, with maximise /
    minimise. Rows (by trial number): number, values, on_front (non-dominated), baseline, student."""
    view = view_of(study, directions)
    dirs = list(view.directions)
    done = []
    for t in view.complete():
        if view.multi:
            vals = list(t.values) if len(t.values) == len(dirs) and all(finite(v) for v in t.values) else None
        else:
            size = tr.metric_of(t, tr.Key.PARAMS)
            vals = [objective(t), size] if size is not None else None
        if vals is not None:
            done.append((t, [float(v) for v in vals]))
    if not view.multi:
        dirs = [dirs[0], StudyDirection.MINIMIZE]
    rows = []
    for t, vals in done:
        front = not any(_dominates(o, vals, dirs) for s, o in done if s is not t)
        rows.append({"number": t.number, "values": vals, "on_front": front, "baseline": baseline(t),
                     "student": student(t)})
    return rows
