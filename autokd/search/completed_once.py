"""A percentile (median) pruner that reads the study's completed trials once per trial, not once per epoch."""

from __future__ import annotations

import copy
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["CompletedOncePerTrial"]


class _CompletedView:
    """The study as the pruner sees it: ``get_trials(states=(COMPLETE,))`` answered from a list read earlier;
    everything else is the study's own."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        self._study, self._completed = study, completed

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        if states is not None and tuple(states) == (TrialState.COMPLETE,):
            return copy.deepcopy(self._completed) if deepcopy else list(self._completed)
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class CompletedOncePerTrial(optuna.pruners.BasePruner):
    """Optuna's median/percentile pruner (``inner``), reading the study's completed trials once per trial
    instead of once per reported epoch.

    Each ``should_prune`` of Optuna's percentile pruner reads every completed trial back from the storage; on
    SQLite that is ~8 ms per epoch (the ORM re-reads the running trials with it), more than all of a trial's
    other storage writes together. Completed trials never change, so the one difference is that trials that
    OTHER workers complete while this trial trains count from its next trial on: with one worker the
    decisions are exactly Optuna's (tested); with several, Optuna's own decisions already depend on which of
    the others happened to finish first.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner
        self._key: tuple[Any, ...] | None = None
        self._completed: list[FrozenTrial] = []

    def prime(self, study: optuna.Study, number: int, trials: list[FrozenTrial]) -> None:
        """Take the completed trials for trial ``number`` from ``trials``, a read of the study made just before
        that trial was asked (the worker loop's own), instead of reading them at its first epoch. Trials that
        complete in between count from the next trial on, as those completing during the trial already do."""
        self._key = (study.study_name, getattr(study, "_study_id", None), number)
        self._completed = [t for t in trials if t.state == TrialState.COMPLETE]

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        key = (study.study_name, getattr(study, "_study_id", None), trial.number)
        if key != self._key:
            self._completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._key = key
        return self.inner.prune(_CompletedView(study, self._completed), trial)

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "_key": None, "_completed": []}

    def __repr__(self) -> str:
        return f"CompletedOncePerTrial({self.inner!r})"
