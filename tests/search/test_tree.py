"""Suggestion is derived from the decision tree: a trial is asked exactly the decisions it reaches, in tree
order, and the recipe is what those values make. The tree counts configurations correctly."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autokd.errors import ConfigError
from autokd.recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from autokd.search.params import Fixed
from autokd.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))

SPACE = {
    "student": [{"name": "cnn", "kwargs": {"width": [2, 4]}}, {"name": "cnn", "kwargs": {"width": 8, "depth": [2, 3]}}],
    "ce_weight": {"low": 0.1, "high": 1.0, "log": True},
    "terms": {"pick": {"min": 1, "max": 2},
              "from": {"kd": {"params": {"temperature": [2, 4]}, "weight": [0.5, 1.0]}}},
    "optim": {"lr": [0.05, 0.1]},
}


def reachable(decisions, params):
    """Names of the non-fixed decisions a trial with ``params`` passes through, in depth-first order."""
    out = []
    for d in decisions:
        if isinstance(d.param, Fixed):
            if not d.children:
                continue
            value = d.param.value
        else:
            out.append(d.name)
            value = params[d.name]
        out += reachable(d.children.get(value, []), params)
    return out


@pytest.mark.parametrize("space", [SPACE, {
    "student": ["cnn_w2"],
    "terms": [{"loss": "kd", "optional": True, "params": {"temperature": {"low": 1, "high": 8}}}],
    "temperature": {"low": 1, "high": 8, "log": True},
    "scheme": ["standard"],
}])
def test_suggest_follows_the_tree(space):
    sp = SearchSpace.from_dict(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        t = study.ask()
        sp.suggest(t)
        study.tell(t, 0.0)
        assert list(t.params) == reachable(sp.tree(), t.params)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_space_asks_exactly_its_reachable_decisions(path, sampler):
    """Each trial's parameters are exactly the reachable searched decisions, asked in tree order, and the
    stored parameters alone rebuild the suggested recipe."""
    sp = SearchSpace.load(path)
    make = optuna.samplers.RandomSampler if sampler == "random" else optuna.samplers.TPESampler
    study = optuna.create_study(sampler=make(seed=0))
    tree = sp.tree()
    for i in range(30):
        t = study.ask()
        recipe = sp.suggest(t)
        study.tell(t, float(i % 7))
        assert list(t.params) == reachable(tree, t.params)
        again = sp.recipe_from_params(study.trials[-1].params)
        assert again.model_dump(exclude={"provenance"}) == recipe.model_dump(exclude={"provenance"})


def test_recipe_from_params_puts_every_value_in_its_place():
    sp = SearchSpace.from_dict({
        "student": ["cnn_w2", {"name": "cnn", "kwargs": {"width": [3, 4], "depth": 2}}],
        "temperature": {"low": 1, "high": 8},
        "terms": [{"loss": "kd", "optional": True},
                  {"loss": ["at", "kd"], "pairs": {"search": {"depths": [0.25, 0.5, 1.0], "max": 3}}},
                  {"loss": "fsp", "pairs": "auto", "weight": 2.0}],
        "scheme": {"choices": {"standard": {}, "eskd": {"stop_fraction": {"low": 0.3, "high": 0.9}}}},
        "optim": {"lr": [0.05, 0.1], "milestones": [0.5, 0.8]},
        "budget": {"epochs": 3},
    })
    params = {"student": "cnn(depth=2)", "student.cnn(depth=2).width": 4, "temperature": 2.5,
              "terms.0.use": True, "terms.0.kd.weight": 0.3,
              "terms.1.loss": "at", "terms.1.at.p": 3.0, "terms.1.at.weight": 50.0, "terms.1.at.pairs.n": 3,
              "terms.1.at.pairs.0": 1.0, "terms.1.at.pairs.1": 0.25, "terms.1.at.pairs.2": 1.0,
              "scheme": "eskd", "scheme.eskd.stop_fraction": 0.5, "optim.lr": 0.1}
    want = Recipe(
        student=StudentSpec(name="cnn", kwargs={"width": 4, "depth": 2}),
        ce_weight=1.0,
        terms=[TermSpec(loss="kd", weight=0.3, params={"temperature": 2.5}),  # the shared temperature
               TermSpec(loss="at", weight=50.0, params={"p": 3.0}, pairs={"depths": [0.25, 1.0]}),
               TermSpec(loss="fsp", weight=2.0, pairs="auto")],
        scheme=SchemeSpec(name="eskd", params={"stop_fraction": 0.5}),
        optim=OptimSpec(lr=0.1, milestones=[0.5, 0.8], epochs=3))
    got = sp.recipe_from_params(params)
    assert got.model_dump(exclude={"provenance"}) == want.model_dump(exclude={"provenance"})
    # the dropped optional term and the other student leave no trace
    params = {**params, "terms.0.use": False, "student": "cnn_w2"}
    got = sp.recipe_from_params(params)
    assert got.student == StudentSpec(name="cnn_w2") and [t.loss for t in got.terms] == ["at", "fsp"]
    with pytest.raises(ConfigError, match="no value for parameter 'terms.1.loss'"):
        sp.recipe_from_params({k: v for k, v in params.items() if k != "terms.1.loss"})
    with pytest.raises(ConfigError, match=r"scheme: 'dot' is not one of \['standard', 'eskd'\]"):
        sp.recipe_from_params({**params, "scheme": "dot"})


def test_count_configurations_by_hand():
    sp = SearchSpace.from_dict(SPACE)
    # students: width {2,4} -> 2 ; width 8 with depth {2,3} -> 2  => 4
    # terms: n in {1,2}; each slot: loss fixed kd, temperature {2,4} x weight {0.5,1} = 4 -> 4 + 16 = 20
    # optim.lr: 2
    assert sp.count_configurations() == 4 * 20 * 2


def test_shared_temperature_is_one_parameter():
    sp = SearchSpace.from_dict({"student": ["cnn_w2"], "temperature": {"low": 1, "high": 8},
                                "terms": {"pick": {"min": 2, "max": 2}, "from": ["kd"]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    t = study.ask()
    r = sp.suggest(t)
    assert len(r.terms) == 2 and r.terms[0].params["temperature"] == r.terms[1].params["temperature"]
    assert "temperature" in t.params and not any(k.endswith(".temperature") for k in t.params)
