"""The decision tree mirrors define-by-run suggestion exactly, and counts configurations correctly."""

from __future__ import annotations

import optuna
import pytest

from autokd.search.params import Fixed
from autokd.search.space import SearchSpace

SPACE = {
    "student": [{"name": "cnn", "kwargs": {"width": [2, 4]}}, {"name": "cnn", "kwargs": {"width": 8, "depth": [2, 3]}}],
    "ce_weight": {"low": 0.1, "high": 1.0, "log": True},
    "terms": {"pick": {"min": 1, "max": 2},
              "from": {"kd": {"params": {"temperature": [2, 4]}, "weight": [0.5, 1.0]}}},
    "optim": {"lr": [0.05, 0.1]},
}


def reachable(decisions, params):
    """Names of the non-fixed decisions a trial with ``params`` passes through."""
    out = set()
    for d in decisions:
        if isinstance(d.param, Fixed):
            if not d.children:
                continue
            value = d.param.value
        else:
            out.add(d.name)
            value = params[d.name]
        out |= reachable(d.children.get(value, []), params)
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
        assert set(t.params) == reachable(sp.tree(), t.params)


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
