"""EvolutionSampler: random start, tournaments over completed trials only (diverged losses rejected),
crossover along the tree, mutation."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autokd.search.samplers import EvolutionSampler
from autokd.search.samplers.evolution import PARENTS_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tempting(trial):
    """The 'explode' loss looks best early, then diverges: it must never become a parent."""
    loss = trial.suggest_categorical("loss", ["kd", "explode", "at", "sp"])
    w = trial.suggest_float("w", 0.01, 10.0, log=True)
    if loss == "explode":
        trial.report(0.99, 0)
        trial.set_user_attr("prune_reason", "training diverged at epoch 1, step 4 (generic=inf)")
        raise optuna.TrialPruned("training diverged at epoch 1")
    acc = {"kd": 0.8, "at": 0.7, "sp": 0.6}[loss] - 0.01 * abs(w - 1.0)
    trial.report(acc, 0)
    return acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diverged_trials_are_never_parents(seed):
    study = optuna.create_study(direction="maximize", sampler=EvolutionSampler(population_size=5, seed=seed,
                                                                                mutation_prob=0.3))
    study.optimize(tempting, n_trials=60)
    state = {t.number: t.state for t in study.trials}
    diverged = [t.number for t in study.trials if t.state == TrialState.PRUNED]
    assert diverged, "the mutation should keep proposing the exploding loss"
    children = [t for t in study.trials if PARENTS_ATTR in t.system_attrs]
    assert len(children) >= 50
    for t in children:
        for p in t.system_attrs[PARENTS_ATTR]:
            assert state[p] == TrialState.COMPLETE and p < t.number
    assert study.best_params["loss"] == "kd"


def test_first_population_is_random_then_children():
    study = optuna.create_study(direction="maximize", sampler=EvolutionSampler(population_size=8, seed=0))
    study.optimize(tempting, n_trials=20)
    assert not any(PARENTS_ATTR in t.system_attrs for t in study.trials[:8])
    assert all(PARENTS_ATTR in t.system_attrs for t in study.trials[8:])


def test_population_and_tournament_on_hand_built_trials():
    dists = {"loss": CategoricalDistribution(["kd", "at"]), "w": FloatDistribution(0.0, 1.0)}
    s = EvolutionSampler(population_size=3, tournament_size=3, seed=0, mutation_prob=0.0, crossover_prob=0.0)
    study = optuna.create_study(direction="maximize", sampler=s)
    rows = [("kd", 0.1, 0.5, TrialState.COMPLETE), ("at", 0.2, 0.9, TrialState.COMPLETE),
            ("kd", 0.3, 0.7, TrialState.COMPLETE), ("at", 0.4, 0.8, TrialState.COMPLETE),
            ("kd", 0.9, None, TrialState.PRUNED), ("kd", 0.8, None, TrialState.FAIL)]
    for loss, w, v, st in rows:
        study.add_trial(create_trial(params={"loss": loss, "w": w}, distributions=dists, value=v, state=st,
                                     intermediate_values={0: 0.95} if st == TrialState.PRUNED else {}))
    pop = s.population(s._sync(study), maximize=True)
    assert [r.number for r in pop] == [1, 3, 2]  # the 3 best completed, best first
    # a tournament over the whole population always picks the best; no crossover, no mutation: a copy
    t = study.ask()
    assert (t.suggest_categorical("loss", ["kd", "at"]), t.suggest_float("w", 0.0, 1.0)) == ("at", 0.2)
    assert study._storage.get_trial_system_attrs(t._trial_id)[PARENTS_ATTR] == [1, 1]


def test_crossover_takes_each_decision_from_a_parent_that_reached_it():
    cat = CategoricalDistribution(["a", "b"])
    dists = {"arch": cat, "a.x": FloatDistribution(0, 1), "b.y": FloatDistribution(0, 1), "z": FloatDistribution(0, 1)}
    s = EvolutionSampler(population_size=2, tournament_size=1, seed=0, mutation_prob=0.0, crossover_prob=1.0)
    study = optuna.create_study(sampler=s)
    study.add_trial(create_trial(params={"arch": "a", "a.x": 0.25, "z": 0.1},
                                 distributions={k: dists[k] for k in ("arch", "a.x", "z")}, value=1.0))
    study.add_trial(create_trial(params={"arch": "b", "b.y": 0.75, "z": 0.9},
                                 distributions={k: dists[k] for k in ("arch", "b.y", "z")}, value=1.0))
    seen = set()
    for _ in range(30):
        t = study.ask()
        arch = t.suggest_categorical("arch", ["a", "b"])
        leaf = t.suggest_float(f"{arch}.{'x' if arch == 'a' else 'y'}", 0, 1)
        z = t.suggest_float("z", 0, 1)
        assert leaf == (0.25 if arch == "a" else 0.75)  # only the parent that reached it can give it
        assert z in (0.1, 0.9)
        seen.add((arch, z))
        study.tell(t, state=TrialState.FAIL)  # keep the population to the two founders
    assert seen == {("a", 0.1), ("a", 0.9), ("b", 0.1), ("b", 0.9)}  # uniform crossover mixes them


def test_mutation_resamples():
    s = EvolutionSampler(population_size=2, tournament_size=1, seed=0, mutation_prob=1.0, crossover_prob=0.0)
    study = optuna.create_study(sampler=s)
    cat = CategoricalDistribution(["a", "b", "c"])
    for v in ("a", "b"):
        study.add_trial(create_trial(params={"c": v}, distributions={"c": cat}, value=0.0))
    for _ in range(10):
        t = study.ask()
        parent = study.trials[study._storage.get_trial_system_attrs(t._trial_id)[PARENTS_ATTR][0]]
        assert t.suggest_categorical("c", ["a", "b", "c"]) != parent.params["c"]
        study.tell(t, state=TrialState.FAIL)


@pytest.mark.parametrize("kw", [{"population_size": 1}, {"tournament_size": 0}, {"mutation_prob": 1.5},
                                {"crossover_prob": -0.1}])
def test_constructor_validates(kw):
    with pytest.raises(ValueError, match="EvolutionSampler"):
        EvolutionSampler(**kw)
