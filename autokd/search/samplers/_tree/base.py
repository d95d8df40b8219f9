"""The base of autokd's tree samplers: define-by-run (independent) sampling, single-objective studies only,
a seeded numpy random state that can be reseeded, and incremental statistics of the storage (a
:class:`.ledger.Ledger`) that pickling drops and one lock serialises (threads of ``n_jobs`` share a sampler)."""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection

from .ledger import Ledger
from .records import TreeInfo

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from ...space import SearchSpace
    from ...tree import Decision

__all__ = ["TreeSamplerBase", "refuse_multi_objective"]


def refuse_multi_objective(study: Study, who: str) -> None:
    """``ValueError`` for a study with several objectives (the error Optuna's single-objective samplers raise)."""
    if len(study.directions) > 1:
        raise ValueError(f"{who} supports single-objective studies only; this study has "
                         f"{len(study.directions)} objectives (use nsga2 for multi-objective search)")


class TreeSamplerBase(BaseSampler, abc.ABC):
    """Shared plumbing of autokd's tree samplers.

    Every parameter is sampled independently, as the objective suggests it (define-by-run): the relative
    search space is empty and :meth:`_sample` does the work. A study with several objectives is refused
    with ``ValueError`` wherever Optuna calls the sampler for it (``before_trial``, ``sample_relative``,
    ``sample_independent``). ``self._cache`` (what the sampler learnt from the storage, updated in place
    as trials finish) is dropped on pickling and rebuilt from the storage on first use; the random state is
    kept. ``self._lock`` serialises the sampler's calls (and its inspection methods), so that threads
    sharing the sampler (``study.optimize(n_jobs=...)``) never see the statistics half updated.

    Subclasses validate their own arguments, call ``super().__init__`` and implement :meth:`_sample`;
    :meth:`_before_trial` is an optional hook.
    """

    def __init__(self, *, space: SearchSpace | str | Path | None, tree: Sequence[Decision] | None,
                 seed: int | None) -> None:
        self._info = TreeInfo(space, tree, type(self).__name__)
        self._seed = seed
        self._rng = np.random.RandomState(seed)
        self._cache: Any = None
        self._read_for: int | None = None  # the trial whose first sampler call last read the storage
        self._lock = threading.RLock()

    # ---- Optuna's interface ------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_read_for"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def reseed_rng(self) -> None:
        self._rng = np.random.RandomState()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        refuse_multi_objective(study, type(self).__name__)
        with self._lock:
            self._before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        refuse_multi_objective(study, type(self).__name__)
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        refuse_multi_objective(study, type(self).__name__)
        with self._lock:
            return self._sample(study, trial, param_name, param_distribution)

    # ---- for subclasses ---------------------------------------------------------------------------
    #: the kind of ledger the sampler keeps (a subclass adds the statistics it needs)
    _ledger_type: type[Ledger] = Ledger

    def _ledger(self, study: Study, trial: FrozenTrial | None = None) -> Any:
        """The sampler's ledger of ``study``, brought up to date with its storage (built on first use, or
        afresh when the sampler meets another study). With ``trial``, the storage is read once per trial: the
        calls for one trial's parameters (milliseconds apart) share the read its first call made -- on an RDB
        storage each read costs several ms, and trials other workers finish meanwhile count from the next
        trial on."""
        with self._lock:
            led = self._cache
            if led is None or not led.matches(study):
                led = self._cache = self._ledger_type(study, self._info, self._maximize(study))
                self._read_for = None
            if trial is None or self._read_for != trial.number:
                led.update(study)
                self._read_for = None if trial is None else trial.number
            return led

    def _before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Called before each trial of a single-objective study."""

    @abc.abstractmethod
    def _sample(self, study: Study, trial: FrozenTrial, param_name: str, dist: BaseDistribution) -> Any:
        """A value of ``dist`` for ``param_name`` in ``trial`` (single-objective studies only)."""

    @staticmethod
    def _maximize(study: Study) -> bool:
        return study.direction == StudyDirection.MAXIMIZE
