"""Prescreening: the pure decision rule on scripted scores, history from a study, scoring a recipe."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch

from autokd import data, models, proxies
from autokd.config import PrescreenSpec
from autokd.errors import ConfigError, UnknownNameError
from autokd.recipe import Recipe, StudentSpec, TermSpec
from autokd.search.prescreen import Prescreen, decide, history_from_study

SCORES = [5.0, 3.0, 8.0, 2.0, 6.0, 1.0, 7.0, 4.0]
# keep 0.5 -> median of the earlier scores, after 3 of them:
#   t3: 2 < median(5,3,8)=5 prune; t4: 6 >= median(5,3,8,2)=4; t5: 1 < 5 prune; t6: 7 >= 4; t7: 4 < 5 prune
EXPECTED = [False, False, False, True, False, True, False, True]


def _batch():
    return torch.randn(4, 1, 8, 8), torch.arange(4)


def test_scripted_sequence_prunes_exactly_the_expected_trials():
    got, hist = [], []
    for s in SCORES:
        prune, reason = decide(s, hist, keep=0.5, warmup=3, proxy="naswot")
        got.append(prune)
        assert ("warm-up" in reason) == (len(hist) < 3)
        hist.append(s)  # every score joins the history, pruned or not
    assert got == EXPECTED


def test_quantile_boundary_warmup_and_keep_one():
    hist = [1.0, 2.0, 3.0, 4.0, 5.0]  # 0.75-quantile (keep 0.25) = 4.0
    assert decide(3.9, hist, keep=0.25, warmup=5)[0] is True
    assert decide(4.0, hist, keep=0.25, warmup=5)[0] is False  # strictly below prunes
    assert decide(-100.0, hist, keep=0.25, warmup=6)[0] is False  # not warm yet
    assert decide(-100.0, hist, keep=1.0, warmup=0)[0] is False  # keep everything
    assert decide(float("nan"), hist, keep=0.5, warmup=0)[0] is True
    assert decide(0.0, [], keep=0.5, warmup=0)[0] is False  # nothing to compare with
    assert "0.75-quantile 4" in decide(3.9, hist, keep=0.25, warmup=5)[1]


def test_study_wiring_records_every_score_and_resumes_from_the_study():
    study = optuna.create_study(direction="maximize")
    pre = Prescreen("naswot", keep=0.5, warmup=3, batch=_batch())

    def objective(trial):  # what the runner's objective does, with a scripted proxy score
        s = SCORES[trial.number] if trial.number < len(SCORES) else 0.0
        trial.set_user_attr("proxy_score", s)
        prune, reason = pre.decide(s, Prescreen.study_history(trial.study, exclude=trial.number))
        if prune:
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)
        return s

    study.optimize(objective, n_trials=len(SCORES))
    pruned = [t.state == optuna.trial.TrialState.PRUNED for t in study.trials]
    assert pruned == EXPECTED
    assert [t.user_attrs["proxy_score"] for t in study.trials] == SCORES
    assert all(("prune_reason" in t.user_attrs) == p for t, p in zip(study.trials, pruned, strict=True))

    # resume: a fresh prescreen seeded from the study is already warm
    spec = PrescreenSpec(proxy="naswot", keep=0.5, warmup=3)
    again = Prescreen.from_study(study, spec, _batch())
    assert again.history == SCORES and again.keep == 0.5 and again.warmup == 3
    assert again.decide(0.0)[0] is True and again.decide(9.0)[0] is False
    assert history_from_study(study, exclude=[0, 1]) == SCORES[2:]


def test_failed_trials_and_trials_without_scores_are_not_history():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"proxy_score": 1.5}))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"baseline": "kd"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"proxy_score": 9.0}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={"proxy_score": -2.0}))
    assert history_from_study(study) == [1.5, -2.0]


def test_score_builds_the_recipes_student_as_the_trainer_does():
    bundle = data.create("digits", seed=0, train_fraction=0.25)
    ctx = SimpleNamespace(data=bundle, device=torch.device("cpu"), cfg=SimpleNamespace(seed=0))
    pre = Prescreen.for_context(ctx, PrescreenSpec(proxy="diswot", batch_size=32))
    teacher = models.create("cnn", 10, in_channels=1, width=8).eval()
    recipe = Recipe(student=StudentSpec(name="cnn", kwargs={"width": 3}), ce_weight=0.1, seed=7,
                    terms=[TermSpec(loss="kd", weight=0.9)])
    torch.manual_seed(7)
    student = models.from_spec(recipe.student, 10, 1)
    expected = proxies.create("diswot")(student, teacher, pre.batch, seed=7)
    rng = torch.get_rng_state()
    assert pre.score(recipe, None, teacher) == expected
    assert pre.score(recipe, student, teacher) == expected
    assert torch.equal(torch.get_rng_state(), rng)
    s, prune, reason = pre(recipe, None, teacher)
    assert s == expected and prune is False and "warm-up" in reason


def test_constructor_validates_eagerly():
    with pytest.raises(UnknownNameError):
        Prescreen("nasowt", 0.5, 3, _batch())
    with pytest.raises(ConfigError, match="keep"):
        Prescreen("naswot", 0.0, 3, _batch())
    with pytest.raises(ConfigError, match="warmup"):
        Prescreen("naswot", 0.5, -1, _batch())
    with pytest.raises(ConfigError, match="teacher"):
        Prescreen("diswot", 0.5, 3, _batch(), num_classes=10).score(
            Recipe(student=StudentSpec(name="cnn_w2")), None, None)
