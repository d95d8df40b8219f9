"""The one view of a study the report's data step works on: trials sorted by number, directions, study
attributes; and the shared readers (objective value, baseline tag, baseline matched per student).

Trial attributes are read only through :mod:`autokd.search.trial_record`. Every public function of the data
step takes an :class:`optuna.Study`, or a sequence of :class:`~optuna.trial.FrozenTrial` plus ``directions``
(``StudyDirection`` or ``"maximize"``/``"minimize"``; inferred when omitted: ``[MAXIMIZE]`` single-objective,
``[MAXIMIZE, MINIMIZE]`` for (val_acc, params)). Objective 0 (validation accuracy) drives everything ranked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ...search import trial_record as tr

__all__ = ["BASELINES", "STATES", "StudyLike", "DirectionLike", "View", "view_of", "objective_names"]

StudyLike = Union[Study, Sequence[FrozenTrial]]
DirectionLike = Union[StudyDirection, str]

#: baseline tags as the report's rows carry them (``Baseline`` values)
BASELINES = tuple(b.value for b in tr.Baseline)
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class View:
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

    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE and objective(t) is not None]

    def ranked(self) -> list[FrozenTrial]:
        """Completed trials, best first (ties by trial number)."""
        sign = -1.0 if self.maximize else 1.0
        return sorted(self.complete(), key=lambda t: (sign * (objective(t) or 0.0), t.number))

    def names(self) -> list[str]:
        n = len(self.directions)
        if self.metric_names and len(self.metric_names) == n:
            return list(self.metric_names)
        defaults = ["val_acc", "params"]
        return [defaults[i] if i < len(defaults) else f"objective_{i}" for i in range(n)]

    def gain(self, value: float | None, base: float | None) -> float | None:
        """Improvement of ``value`` over ``base`` (positive = better, whatever the direction)."""
        if value is None or base is None:
            return None
        return value - base if self.maximize else base - value

    def matched_baseline(self, t: FrozenTrial, tag: str) -> FrozenTrial | None:
        """The completed ``tag`` baseline trained with the same student as ``t`` (studies enqueue one per
        student choice). A trial that records no student (older studies) is compared with the first one."""
        done = [b for b in self.trials if baseline(b) == tag and b.state == TrialState.COMPLETE
                and objective(b) is not None]
        student = tr.student_of(t)
        if student is None:
            return done[0] if done else None
        return next((b for b in done if tr.student_of(b) == student), None)

    def gains(self, t: FrozenTrial) -> dict[str, float | None]:
        """``{"gain_vs_ce": ..., "gain_vs_kd": ...}`` over the matched baselines (accuracy units)."""
        v = objective(t)
        out = {}
        for tag, key in ((tr.Baseline.CE_ONLY.value, "gain_vs_ce"), (tr.Baseline.KD.value, "gain_vs_kd")):
            b = self.matched_baseline(t, tag)
            out[key] = self.gain(v, objective(b) if b is not None else None)
        return out


def _direction(d: DirectionLike) -> StudyDirection:
    if isinstance(d, StudyDirection):
        return d
    name = str(d).strip().lower().removeprefix("studydirection.")
    if name == "maximize":
        return StudyDirection.MAXIMIZE
    if name == "minimize":
        return StudyDirection.MINIMIZE
    raise ValueError(f"unknown study direction {d!r} (expected 'maximize' or 'minimize')")


def view_of(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> View:
    if isinstance(study, View):
        return study
    if isinstance(study, Study):
        view = View(trials=list(study.get_trials(deepcopy=False)), directions=list(study.directions),
                    user_attrs=dict(study.user_attrs), study_name=study.study_name,
                    metric_names=study.metric_names, study=study)
    else:
        view = View(trials=list(study), directions=[])
    if directions is not None:
        view.directions = [_direction(d) for d in directions]
    if not view.directions:
        n = max((len(t.values) for t in view.trials if t.values), default=1)
        view.directions = [StudyDirection.MAXIMIZE] + [StudyDirection.MINIMIZE] * (n - 1)
    view.trials.sort(key=lambda t: t.number)
    return view


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def objective(t: FrozenTrial | None) -> float | None:
    """Objective 0 of a trial, or None."""
    if t is None or not t.values:
        return None
    v = t.values[0]
    return float(v) if finite(v) else None


def baseline(t: FrozenTrial) -> str | None:
    """The baseline tag (``"ce_only"``/``"kd"``; older studies' ``"ce"`` reads as ``"ce_only"``) or None."""
    b = tr.baseline_of(t)
    return None if b is None else b.value


def student(t: FrozenTrial) -> str | None:
    s = tr.student_of(t)
    if s is None and "student" in t.params:
        s = str(t.params["student"])
    return s


def duration_s(t: FrozenTrial) -> float | None:
    d = t.duration
    return None if d is None else d.total_seconds()


def objective_names(study: StudyLike, directions: Sequence[DirectionLike] | None = None) -> list[str]:
    """Metric names if set on the study, else ``val_acc`` (+ ``params`` for the 2-objective convention)."""
    return view_of(study, directions).names()
