"""Evolutionary search over a define-by-run decision tree with loss rejection (KD-Zero, NeurIPS 2023)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from ..tree import Decision
from ._tree.base import TreeSamplerBase
from ._tree.distributions import contains, uniform
from ._tree.ledger import Ledger
from ._tree.records import Record, TreeInfo

if TYPE_CHECKING:
    from optuna.study import Study

    from ..space import SearchSpace

__all__ = ["EvolutionSampler", "PARENTS_ATTR"]

PARENTS_ATTR = "evolution:parents"  # trial system attribute: the numbers of the trial's two parents


def _completed(r: Record) -> bool:
    return r.state == TrialState.COMPLETE and r.value is not None and math.isfinite(r.value)


class _Ranking(Ledger):
    """A :class:`._tree.ledger.Ledger` that also keeps the completed records (finite values) ranked best
    first, ties by trial number, as each is absorbed: the population is its head."""

    def __init__(self, study: Study, info: TreeInfo, maximize: bool) -> None:
        super().__init__(study, info, maximize)
        self.ranked: list[Record] = []
        self._keys: list[tuple[float, int]] = []

    def _added(self, r: Record) -> None:
        if _completed(r):
            assert r.value is not None
            key = (-self.sign * r.value, r.number)
            pos = bisect.bisect_left(self._keys, key)
            self._keys.insert(pos, key)
            self.ranked.insert(pos, r)


class EvolutionSampler(TreeSamplerBase):
    """Tournament-selection evolution over the decision tree of a define-by-run objective (KD-Zero).

    **Generations.** Until ``population_size`` searched trials have finished (or while no trial has
    completed) trials are sampled uniformly at random (log-uniform on log ranges). After that each new
    trial is a child: the *population* is the ``population_size`` best completed trials (elitist,
    brought up to date from the storage before every trial, so workers and resumed studies share it);
    two parents are drawn by tournaments (``tournament_size`` distinct members at random, the best
    wins), and recorded in the trial's system attribute ``"evolution:parents"``.

    **Crossover** (probability ``crossover_prob``, otherwise the child copies parent 1): uniform over
    the decision tree, decided as the objective suggests each parameter: the child takes the value of
    one of the parents, chosen at random, among those whose path reaches the decision: they suggested
    that parameter (define-by-run names are stable functions of the decisions above them, as in autokd
    spaces), with a value the current distribution contains. When neither parent reached it (the child
    took a branch that only it has, after a mutation) the value is drawn at random.
    **Mutation**: each decision is then, with probability ``mutation_prob``, resampled from its
    distribution; a branching decision (categorical, or an integer with children in a declared
    ``space``/``tree``, e.g. ``terms.n``) mutates to another branch than the inherited one.

    **Loss rejection.** Only COMPLETE trials can be parents. A trial whose loss blew up is pruned through
    the normal pruner path (the trainer raises on a non-finite loss, the objective turns it into
    ``optuna.TrialPruned`` with ``prune_reason`` "training diverged..."), so it is rejected: never a
    parent. Trials pruned for low intermediate accuracy and failed trials are never parents either.
    Param-less trials (autokd's baselines) are ignored. Multi-objective studies are refused with ``ValueError``
    by ``before_trial``, ``sample_relative`` and ``sample_independent`` (Optuna's single-objective contract).

    **State.** Each sampler call reads the study's storage, so trials of other workers sharing it count at
    once, and absorbs only the trials finished since its last look (:mod:`._tree.ledger`): the records by
    trial number and the completed ones ranked, from which the population is read without re-scanning
    every trial. Seeded and deterministic; picklable (the ledger is dropped on pickling and rebuilt from the
    storage; the random state and the parents of an in-flight trial are kept, and also read back from the
    trial's system attributes).

    Args:
        population_size: the number of best completed trials forming the population (>= 2); also the
            number of random trials that start the search.
        tournament_size: contestants per tournament (1 = random parent; >= population_size = the best).
        mutation_prob: probability that each decision is resampled.
        crossover_prob: probability that a child mixes both parents (otherwise copies parent 1).
        space: an autokd ``SearchSpace`` (or a path to its YAML). Optional: define-by-run already says
            which decisions a parent reached; the declared tree only marks which integers branch.
        tree: a declared decision tree (``SearchSpace.tree()``), instead of ``space``.
        seed: seed of the random state.
    """

    _ledger_type = _Ranking

    def __init__(self, *, population_size: int = 16, tournament_size: int = 3, mutation_prob: float = 0.1,
                 crossover_prob: float = 0.9, space: SearchSpace | str | Path | None = None,
                 tree: Sequence[Decision] | None = None, seed: int | None = None) -> None:
        who = type(self).__name__
        if not (isinstance(population_size, int) and population_size >= 2):
            raise ValueError(f"{who}: population_size must be an integer >= 2, got {population_size!r}")
        if not (isinstance(tournament_size, int) and tournament_size >= 1):
            raise ValueError(f"{who}: tournament_size must be an integer >= 1, got {tournament_size!r}")
        for name, p in (("mutation_prob", mutation_prob), ("crossover_prob", crossover_prob)):
            if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                raise ValueError(f"{who}: {name} must be in [0, 1], got {p!r}")
        super().__init__(space=space, tree=tree, seed=seed)
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.mutation_prob = float(mutation_prob)
        self.crossover_prob = float(crossover_prob)
        self._plan: tuple[int, tuple[int, int] | None, bool] | None = None  # (trial, parents, crossover)

    # ---- sampling -------------------------------------------------------------------------------
    def _before_trial(self, study: Study, trial: FrozenTrial) -> None:
        led = self._ledger(study, trial)
        parents = self._select_parents(led)
        crossover = parents is not None and bool(self._rng.uniform() < self.crossover_prob)
        if parents is not None and not crossover:
            parents = (parents[0], parents[0])
        self._plan = (trial.number, parents, crossover)
        if parents is not None:
            study._storage.set_trial_system_attr(trial._trial_id, PARENTS_ATTR, list(parents))

    def _sample(self, study: Study, trial: FrozenTrial, param_name: str, dist: BaseDistribution) -> Any:
        by_number = self._ledger(study, trial).by_number
        parents = self._parents_of(trial)
        if parents is None:
            return uniform(dist, self._rng)
        pool = [by_number[n] for n in dict.fromkeys(parents) if n in by_number]
        reach = [r for r in pool if param_name in r.params and contains(dist, r.params[param_name])]
        if reach:
            value = reach[int(self._rng.randint(len(reach)))].params[param_name] if len(reach) > 1 \
                else reach[0].params[param_name]
        else:
            value = uniform(dist, self._rng)
        if self._rng.uniform() < self.mutation_prob:
            value = self._mutate(param_name, dist, value)
        return value

    # ---- internals ------------------------------------------------------------------------------
    def _sync(self, study: Study) -> list[Record]:
        """The records of the study's finished searched trials, by trial number, up to date."""
        with self._lock:
            return list(self._ledger(study).records)

    def population(self, records: Sequence[Record], maximize: bool) -> list[Record]:
        """The ``population_size`` best completed trials (pruned, diverged and failed ones excluded), ties
        by trial number, computed from ``records`` (sampling reads the same from the ledger's ranking)."""
        ok = [r for r in records if _completed(r)]
        sign = -1.0 if maximize else 1.0
        ok.sort(key=lambda r: (sign * r.value, r.number))
        return ok[: self.population_size]

    def _select_parents(self, led: _Ranking) -> tuple[int, int] | None:
        pop = led.ranked[: self.population_size]
        if len(led.records) < self.population_size or not pop:
            return None
        k = min(self.tournament_size, len(pop))

        def tournament() -> int:
            idx = self._rng.choice(len(pop), size=k, replace=False)
            return int(pop[int(min(idx))].number)  # pop is sorted best first

        return tournament(), tournament()

    def _parents_of(self, trial: FrozenTrial) -> tuple[int, ...] | None:
        if self._plan is not None and self._plan[0] == trial.number:
            return self._plan[1]
        stored = trial.system_attrs.get(PARENTS_ATTR)  # a sampler unpickled or swapped mid-trial
        return tuple(int(n) for n in stored) if stored else None

    def _mutate(self, name: str, dist: BaseDistribution, value: Any) -> Any:
        if self._info.is_branching(name, dist):  # a structural decision: mutate to another branch
            choices = self._info.choices(name, dist)
            others = [c for c in choices if not (type(c) is type(value) and c == value)]
            if others:
                return others[int(self._rng.randint(len(others)))]
        return uniform(dist, self._rng)
