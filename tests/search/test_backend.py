"""Every sampler and pruner runs a tiny digits study; resume, baselines and multi-objective are honoured."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autokd.config import StudyConfig
from autokd.search.export import best_trial
from autokd.search.run import run_search as search

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, name, sampler="random", pruner="none", trials=2, **search_kw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: {name}
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search: {{sampler: {sampler}, pruner: {pruner}, trials: {trials}, epochs: 2, baseline_students: 1}}
""")
    return StudyConfig.load(path)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("backend")


@pytest.mark.parametrize("sampler, pruner", [("random", "none"), ("tpe", "median"), ("cmaes", "sha"),
                                             ("random", "hyperband"), ("nsga2", "none")])
def test_sampler_and_pruner_run(tmp, sampler, pruner):
    cfg = _cfg(tmp, f"{sampler}_{pruner}", sampler, pruner)
    study = search(cfg, log=lambda *a: None)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and optuna.trial.TrialState.FAIL not in states
    baselines = sorted(t.user_attrs.get("baseline") for t in study.trials if t.user_attrs.get("baseline"))
    assert baselines == ["ce_only", "kd"]
    for t in study.trials:
        assert "recipe" in t.user_attrs and t.user_attrs["seed"] == cfg.seed
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert 0 <= t.values[0] <= 1 and t.user_attrs["params"] > 0
    if sampler == "nsga2":
        assert len(study.directions) == 2
        assert all(t.values[1] == t.user_attrs["params"] for t in study.trials if t.values)
    assert best_trial(study) is not None
    assert (cfg.study_dir / "best_recipe.yaml").is_file()


def test_resume_with_a_different_objective_count_is_refused(tmp):
    from autokd.errors import ConfigError

    search(_cfg(tmp, "resume_me", "random"), log=lambda *a: None)
    with pytest.raises(ConfigError, match="objective"):
        search(_cfg(tmp, "resume_me", "nsga2"), log=lambda *a: None)


def test_baseline_trials_are_not_pruned_and_enqueued_once(tmp):
    cfg = _cfg(tmp, "once", "random", "median", trials=1)
    search(cfg, log=lambda *a: None)
    study = search(_cfg(tmp, "once", "random", "median", trials=2), log=lambda *a: None)
    kinds = [t.user_attrs.get("baseline") for t in study.trials]
    assert kinds.count("ce_only") == 1 and kinds.count("kd") == 1 and len(kinds) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials if t.user_attrs.get("baseline"))


def test_prescreen_prunes_before_training_and_stores_every_score(tmp):
    path = tmp / "pre.yaml"
    path.write_text(f"""
name: pre
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search: {{sampler: random, pruner: none, trials: 6, epochs: 1, baseline_students: 1,
          prescreen: {{proxy: params, keep: 0.5, warmup: 2}}}}
""")
    study = search(StudyConfig.load(path), log=lambda *a: None)
    assert all("proxy_score" in t.user_attrs for t in study.trials)
    pre = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    for t in pre:
        assert t.user_attrs["epochs"] == 0 and "quantile" in t.user_attrs["prune_reason"]
        assert not t.intermediate_values  # never trained
        earlier = [u.user_attrs["proxy_score"] for u in study.trials if u.number < t.number]
        assert sum(e > t.user_attrs["proxy_score"] for e in earlier) >= len(earlier) / 2


def test_diswot_mode_trains_the_top_k(tmp):
    path = tmp / "dw.yaml"
    path.write_text(f"""
name: dw
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'students.yaml'}
search: {{mode: diswot, epochs: 1, baselines: false,
          diswot: {{proxy: diswot, method: random, candidates: 5, top_k: 2}}}}
""")
    study = search(StudyConfig.load(path), log=lambda *a: None)
    assert len(study.user_attrs["diswot_candidates"]) == 5
    trained = [t for t in study.trials if "diswot_rank" in t.user_attrs]
    assert sorted(t.user_attrs["diswot_rank"] for t in trained) == [0, 1]
    scores = sorted((c["score"] for c in study.user_attrs["diswot_candidates"]), reverse=True)
    assert sorted((t.user_attrs["proxy_score"] for t in trained), reverse=True) == scores[:2]


def test_a_refused_combination_is_pruned_and_the_study_goes_on(tmp):
    space = tmp / "bad_generic.yaml"
    space.write_text("""
student: [cnn_w2]
terms:
  - loss: generic
    params: {location: feat_last, transform1: multiscale_pool, transform2: channel_gram,
             transform3: [channel_gram, identity], distance: l2}
    weight: 1.0
optim: {epochs: 1}
""")
    path = tmp / "refuse.yaml"
    path.write_text(f"""
name: refuse
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {space}
search: {{sampler: random, pruner: none, trials: 8, baselines: false}}
""")
    study = search(StudyConfig.load(path), log=lambda *a: None)
    by_choice = {}
    for t in study.trials:
        by_choice.setdefault(t.params["terms.0.generic.transform3"], set()).add(t.state.name)
    assert by_choice["channel_gram"] == {"PRUNED"}
    assert by_choice["identity"] == {"COMPLETE"}
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(t.user_attrs["prune_reason"].startswith("invalid configuration") for t in pruned)


@pytest.mark.parametrize("sampler", ["mcts", "evolution"])
def test_tree_samplers_run_a_digits_study(tmp, sampler):
    path = tmp / f"{sampler}.yaml"
    path.write_text(f"""
name: {sampler}
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'primitives.yaml'}
search: {{sampler: {sampler}, pruner: median, trials: 4, epochs: 1, baseline_students: 1}}
""")
    study = search(StudyConfig.load(path), log=lambda *a: None)
    searched = [t for t in study.trials if not t.user_attrs.get("baseline")]
    assert len(searched) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in searched)
    assert type(study.sampler).__name__ == {"mcts": "MCTSSampler", "evolution": "EvolutionSampler"}[sampler]


@pytest.mark.parametrize("space", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_runs_on_digits(tmp, space):
    path = tmp / f"run_{space.stem}.yaml"
    path.write_text(f"""
name: run_{space.stem}
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {space}
search: {{sampler: random, pruner: none, trials: 2, epochs: 1, baselines: false}}
""")
    study = search(StudyConfig.load(path), log=lambda *a: None)
    assert len(study.trials) == 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)


def test_seeds_per_trial_select_on_the_mean(tmp):
    path = tmp / "seeds.yaml"
    path.write_text(f"""
name: seeds
device: cpu
output_dir: shared
data: {{name: digits, train_fraction: 0.15}}
teacher: {{name: cnn, kwargs: {{width: 4}}, epochs: 1}}
space: {ROOT / 'search_spaces' / 'digits.yaml'}
search: {{sampler: random, pruner: none, trials: 2, epochs: 2, baseline_students: 1, seeds_per_trial: 3}}
""")
    study = search(StudyConfig.load(path), log=lambda *a: None)
    for t in study.trials:
        seeds = t.user_attrs["val_acc_seeds"]
        assert len(seeds) == 3 and t.values[0] == pytest.approx(sum(seeds) / 3)
        assert t.user_attrs["epochs"] == 6


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_a_finished_trials_reference_cycles_are_freed(device, monkeypatch):
    """The collection after each trial frees the trial's cyclic garbage on every device: the young generations
    on the CPU, a full collection where memory is invisible to Python's thresholds (accelerators)."""
    import gc
    import weakref

    import torch

    from autokd.search.backends.optuna_backend import collect_after_trial

    gc.collect()
    gc.disable()  # the cycle below stays until the collection under test
    try:
        cycle = _Cycle()
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None
        generations = []
        collect = gc.collect
        monkeypatch.setattr(gc, "collect", lambda *a: generations.append(a) or collect(*a))
        collect_after_trial(torch.device(device))
    finally:
        gc.enable()
    assert gone() is None
    assert generations == ([(1,)] if device == "cpu" else [()])
