"""MCTSSampler: UCT arithmetic by hand, expansion order, value normalisation, declared trees."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from autokd.search.samplers import MCTSSampler
from autokd.search.samplers.mcts import uct_score
from autokd.search.space import SearchSpace

A = CategoricalDistribution(["x", "y", "z", "w"])
B = CategoricalDistribution([1, 2])
X = FloatDistribution(0.0, 1.0)


def _trial(a, value=None, b=None, state=TrialState.COMPLETE, inter=None, attrs=None):
    params, dists = {"a": a}, {"a": A}
    if b is not None:
        params["b"], dists["b"] = b, B
    params["x"], dists["x"] = 0.5, X
    return create_trial(params=params, distributions=dists, value=value, state=state,
                        intermediate_values=inter or {}, user_attrs=attrs or {})


def _hand_built(direction="maximize"):
    study = optuna.create_study(direction=direction, sampler=MCTSSampler(c=1.0, seed=0))
    study.add_trial(_trial("x", 1.0, b=1))
    study.add_trial(_trial("x", 0.2, b=2))
    study.add_trial(_trial("y", 0.6))
    study.add_trial(_trial("z", state=TrialState.PRUNED, inter={0: 0.1, 1: 0.4}))
    study.add_trial(_trial("z", state=TrialState.FAIL))
    # a baseline (no params) with a value outside the range: ignored, it must not move the min-max scale
    study.add_trial(create_trial(params={}, distributions={}, value=0.05, user_attrs={"baseline": "ce"}))
    return study


def test_uct_score_formula():
    assert uct_score(0.5, 2, 5, 1.0) == pytest.approx(0.5 + math.sqrt(math.log(5) / 2))
    assert uct_score(0.3, 4, 4, 0.0) == 0.3
    assert uct_score(0.0, 0, 7, 1.0) == math.inf


def test_uct_scores_on_a_hand_built_tree():
    study = _hand_built()
    s = study.sampler
    # completed values 1.0, 0.2, 0.6 -> q = (v - 0.2) / 0.8: 1, 0, 0.5; pruned at 0.4 -> 0.25; failed -> 0
    stats = s.tree_stats(study)
    assert stats[()] == {("a", "x"): (2, pytest.approx(1.0)), ("a", "y"): (1, pytest.approx(0.5)),
                         ("a", "z"): (2, pytest.approx(0.25))}
    assert stats[(("a", "x"),)] == {("b", 1): (1, pytest.approx(1.0)), ("b", 2): (1, pytest.approx(0.0))}
    ln5 = math.log(5)
    scores = s.uct_scores(study, "a", choices=["x", "y", "z", "w"])
    assert scores["x"] == pytest.approx(0.5 + math.sqrt(ln5 / 2))  # 1.3971
    assert scores["y"] == pytest.approx(0.5 + math.sqrt(ln5 / 1))  # 1.7686
    assert scores["z"] == pytest.approx(0.125 + math.sqrt(ln5 / 2))  # 1.0221
    assert scores["w"] == math.inf
    sub = s.uct_scores(study, "b", node=[("a", "x")])
    assert sub == {1: pytest.approx(1 + math.sqrt(math.log(2))), 2: pytest.approx(math.sqrt(math.log(2)))}


def test_selection_follows_uct():
    study = _hand_built()
    t = study.ask()
    assert t.suggest_categorical("a", ["x", "y", "z", "w"]) == "w"  # unvisited first
    study.tell(t, state=TrialState.FAIL)
    # now w: N 1, W 0; N_parent 6 -> x 1.446, y 1.839, z 1.071, w 1.339: y wins
    assert max(study.sampler.uct_scores(study, "a").items(), key=lambda kv: kv[1])[0] == "y"
    t = study.ask()
    assert t.suggest_categorical("a", ["x", "y", "z", "w"]) == "y"


def test_direction_aware_normalisation():
    study = _hand_built("minimize")
    stats = study.sampler.tree_stats(study)
    # minimise: q = (1.0 - v) / 0.8 -> x: 0 and 1, y: 0.5; pruned 0.4 -> 0.75; failed -> 0
    assert stats[()][("a", "x")] == (2, pytest.approx(1.0))
    assert stats[()][("a", "z")] == (2, pytest.approx(0.75))
    assert stats[(("a", "x"),)][("b", 2)] == (1, pytest.approx(1.0))


def test_diverged_pruned_trial_counts_as_worst():
    study = optuna.create_study(direction="maximize", sampler=MCTSSampler(seed=0))
    study.add_trial(_trial("x", 1.0))
    study.add_trial(_trial("y", 0.0))
    study.add_trial(_trial("z", state=TrialState.PRUNED, inter={0: 0.9},
                           attrs={"prune_reason": "training diverged at epoch 0, step 3 (loss=nan)"}))
    assert study.sampler.tree_stats(study)[()][("a", "z")] == (1, 0.0)


def test_unvisited_children_first_in_a_seeded_order():
    choices = list("abcdefgh")

    def first(seed):
        study = optuna.create_study(sampler=MCTSSampler(seed=seed))
        study.optimize(lambda t: float(choices.index(t.suggest_categorical("c", choices))), n_trials=8)
        return [t.params["c"] for t in study.trials]

    order = first(3)
    assert sorted(order) == choices  # every child once before any is revisited
    assert first(3) == order
    assert any(first(s) != order for s in (4, 5, 6))


def test_virtual_loss_spreads_concurrent_trials():
    study = optuna.create_study(sampler=MCTSSampler(seed=0))
    asked = [study.ask() for _ in range(3)]
    picked = [t.suggest_categorical("c", ["a", "b", "c"]) for t in asked]
    assert sorted(picked) == ["a", "b", "c"]


SPACE = {
    "student": ["cnn_w2"],
    "terms": {"pick": {"min": 1, "max": 2}, "from": {"kd": {"params": {"temperature": [2, 4]}}}},
    "optim": {"lr": {"low": 0.01, "high": 0.1, "log": True}},
}


def test_declared_tree_makes_integer_decisions_branch():
    sp = SearchSpace.from_dict(SPACE)
    declared = optuna.create_study(sampler=MCTSSampler(space=sp, seed=0))
    learned = optuna.create_study(sampler=MCTSSampler(seed=0))
    for study in (declared, learned):
        study.optimize(lambda t: float(len(sp.suggest(t).terms)), n_trials=12)
    d, lr = declared.sampler.tree_stats(declared), learned.sampler.tree_stats(learned)
    assert ("terms.n", 1) in d[()] and ("terms.n", 2) in d[()]
    assert all(k[0] != "terms.n" for kids in lr.values() for k in kids)
    # known before observed: both temperatures listed under a node even if one was never tried
    node = next(n for n in d if n == (("terms.n", 1),))
    assert {k for k in d[node]} == {("terms.0.kd.temperature", 2), ("terms.0.kd.temperature", 4)}
    # the root decision's scores come from the declared choices
    assert set(declared.sampler.uct_scores(declared, "terms.n")) == {1, 2}


def test_int_branching_uses_the_range():
    sp = SearchSpace.from_dict(SPACE)
    s = MCTSSampler(space=sp, seed=0)
    study = optuna.create_study(sampler=s)
    t = study.ask()
    assert t.suggest_int("terms.n", 1, 2) in (1, 2)
    assert s._info.is_branching("terms.n", IntDistribution(1, 2))
    assert not s._info.is_branching("other", IntDistribution(1, 2))


@pytest.mark.parametrize("kw", [{"c": -1}, {"c": float("nan")}, {"gamma": 0}, {"n_startup_leaf": 0},
                                {"n_ei_candidates": 0}, {"leaf_decay": 2}, {"space": "x.yaml", "tree": []}])
def test_constructor_validates(kw):
    with pytest.raises(ValueError, match="MCTSSampler"):
        MCTSSampler(**kw)
