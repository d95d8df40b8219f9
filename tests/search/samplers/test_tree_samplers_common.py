"""Both tree samplers: determinism, reachable-only parameters, resume from storage, pickling, mixed trial
states, multi-objective refusal, registry."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from autokd.errors import ConfigError
from autokd.search import samplers
from autokd.search.params import Fixed
from autokd.search.samplers import EvolutionSampler, MCTSSampler
from autokd.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[3]
optuna.logging.set_verbosity(optuna.logging.WARNING)

MAKERS = {
    "mcts": lambda seed, **kw: MCTSSampler(seed=seed, **kw),
    "evolution": lambda seed, **kw: EvolutionSampler(seed=seed, population_size=6, **kw),
}


def objective(trial):
    """Conditional categorical choices, float / log / step / int / log-int leaves; some pruned, some failed."""
    arch = trial.suggest_categorical("arch", ["mlp", "cnn", "tree"])
    v = {"mlp": 0.3, "cnn": 0.0, "tree": 0.6}[arch]
    if arch == "cnn":
        k = trial.suggest_categorical("cnn.kernel", [3, 5, 7])
        v += abs(k - 5) / 10
        v += (trial.suggest_float("cnn.lr", 1e-4, 1.0, log=True) - 0.01) ** 2
    elif arch == "mlp":
        v += abs(trial.suggest_int("mlp.width", 4, 64, log=True) - 16) / 64
        if trial.suggest_categorical("mlp.act", [True, False]):
            v -= 0.05
    else:
        v += trial.suggest_int("tree.depth", 1, 9, step=2) / 20
    x = trial.suggest_float("x", -2.0, 2.0)
    v += (x - 0.5) ** 2 + trial.suggest_float("q", 0.0, 1.0, step=0.25) / 10
    trial.report(v + 1, 0)
    if x < -1.5:
        trial.set_user_attr("prune_reason", "training diverged at epoch 0, step 1 (loss=inf)")
        raise optuna.TrialPruned("training diverged")
    if 1.7 < x:
        raise RuntimeError("boom")  # a failed trial
    if trial.should_prune():
        raise optuna.TrialPruned()
    return v


def _run(sampler, n=30, storage=None, name=None, pruner=None):
    study = optuna.create_study(sampler=sampler, storage=storage, study_name=name, load_if_exists=True,
                                pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3))
    study.optimize(objective, n_trials=n, catch=(RuntimeError,))
    return study


def _params(study):
    return [t.params for t in study.trials]


@pytest.mark.parametrize("kind", MAKERS)
def test_runs_on_plain_objectives_with_every_kind_of_parameter(kind):
    study = _run(MAKERS[kind](0), n=40)
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.COMPLETE in states
    assert states & {optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL}
    for t in study.trials:
        for name, value in t.params.items():
            d = t.distributions[name]
            assert d._contains(d.to_internal_repr(value))
        if "mlp.width" in t.params:
            assert isinstance(t.params["mlp.width"], int)
        if "tree.depth" in t.params:
            assert t.params["tree.depth"] in (1, 3, 5, 7, 9)
        assert t.params["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert study.best_value < 0.6  # better than the worst family at its best


@pytest.mark.parametrize("kind", MAKERS)
def test_deterministic_for_a_seed(kind):
    a, b = _run(MAKERS[kind](7)), _run(MAKERS[kind](7))
    assert _params(a) == _params(b)
    assert _params(a) != _params(_run(MAKERS[kind](8)))


SPACES = [
    {"student": [{"name": "cnn", "kwargs": {"width": [2, 4]}}, {"name": "cnn", "kwargs": {"width": 8, "depth": [2, 3]}}],
     "ce_weight": {"low": 0.1, "high": 1.0, "log": True},
     "terms": {"pick": {"min": 1, "max": 2}, "from": {"kd": {"params": {"temperature": [2, 4]}, "weight": [0.5, 1.0]},
                                                       "at": {}}},
     "optim": {"lr": [0.05, 0.1]}},
    {"student": ["cnn_w2"],
     "terms": [{"loss": "kd", "optional": True, "params": {"temperature": {"low": 1, "high": 8}}},
               {"loss": ["at", "sp"], "optional": True}],
     "scheme": ["standard"]},
]


def reachable(decisions, params):
    """Names of the non-fixed decisions a trial with ``params`` passes through (as tests/search/test_tree.py)."""
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


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.parametrize("space", range(len(SPACES)))
def test_only_reachable_parameters_are_sampled(kind, declared, space):
    sp = SearchSpace.from_dict(SPACES[space])
    study = optuna.create_study(sampler=MAKERS[kind](0, **({"space": sp} if declared else {})))

    def obj(trial):
        r = sp.suggest(trial)
        return len(r.terms) + trial.params.get("ce_weight", 0.0)

    study.optimize(obj, n_trials=30)
    tree = sp.tree()
    for t in study.trials:
        assert set(t.params) == reachable(tree, t.params)


def _stats(sampler, study):
    if isinstance(sampler, MCTSSampler):
        return sampler.tree_stats(study)
    records = sampler._sync(study)
    return [(r.number, r.q) for r in sampler.population(records, maximize=False)]


@pytest.mark.parametrize("kind", MAKERS)
def test_resumed_study_rebuilds_the_same_statistics(kind, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    s = MAKERS[kind](0)
    study = _run(s, n=12, storage=url, name="resume")
    before = _stats(s, study)
    fresh = MAKERS[kind](123)  # another process: nothing in memory, not even the seed
    loaded = optuna.load_study(study_name="resume", storage=url, sampler=fresh)
    assert _stats(fresh, loaded) == before
    # two workers sharing the storage: each sees the other's trials
    _run(fresh, n=3, storage=url, name="resume")
    assert _stats(s, study) == _stats(fresh, loaded)
    assert len(loaded.trials) == 15


@pytest.mark.parametrize("kind", MAKERS)
def test_pickle_round_trip_continues_deterministically(kind):
    study = _run(MAKERS[kind](3), n=15)
    blob = pickle.dumps(study.sampler)
    clone = pickle.loads(blob)
    assert type(clone) is type(study.sampler)
    twin = optuna.create_study(sampler=clone, pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    twin.add_trials(study.trials)
    study.optimize(objective, n_trials=12, catch=(RuntimeError,))
    twin.optimize(objective, n_trials=12, catch=(RuntimeError,))
    assert _params(twin)[15:] == _params(study)[15:]


@pytest.mark.parametrize("kind", MAKERS)
def test_param_less_baselines_are_ignored(kind):
    study = optuna.create_study(direction="maximize", sampler=MAKERS[kind](0))
    study.enqueue_trial({}, user_attrs={"baseline": "ce"})
    study.enqueue_trial({}, user_attrs={"baseline": "kd"})

    def obj(trial):
        if trial.user_attrs.get("baseline"):
            return 100.0  # far above anything searched: must not squash the normalised values
        return -objective(trial)

    study.optimize(obj, n_trials=20, catch=(RuntimeError,))
    assert all(not t.params for t in study.trials[:2])
    if kind == "mcts":
        stats = study.sampler.tree_stats(study)
        assert sum(n for n, _ in stats[()].values()) == 18
        assert max(w / n for n, w in stats[()].values()) > 0.5


@pytest.mark.parametrize("kind", MAKERS)
def test_multi_objective_is_refused(kind):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MAKERS[kind](0))
    with pytest.raises(ValueError, match="MCTSSampler|EvolutionSampler"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=1)


@pytest.mark.parametrize("name, cls", [("mcts", MCTSSampler), ("evolution", EvolutionSampler)])
def test_registered_by_name(name, cls):
    assert name in samplers.names() and not samplers.is_multi_objective(name)
    assert samplers.SAMPLERS.meta(name)["uses_space"]
    assert isinstance(samplers.create(name, seed=1), cls)
    s = samplers.create(name, seed=1, space=ROOT / "search_spaces" / "primitives.yaml")
    assert "terms.n" in s._info.branching_ints
    with pytest.raises(ConfigError, match=name):
        samplers.create(name, seed=1, no_such_option=3)
    with pytest.raises(ConfigError, match=f"sampler_kwargs: {cls.__name__}"):
        samplers.create(name, seed=1, tree=[1, 2])
