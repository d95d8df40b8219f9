"""Numbers from the pure data step (autokd.report.data)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from report_studies import make_study, single_objective_trials, trial

from autokd.report import data


def test_history_best_so_far_maximize(study):
    rows = data.history(study)
    assert [r["number"] for r in rows] == [0, 1, 2, 5, 6]
    assert [r["value"] for r in rows] == [0.70, 0.72, 0.75, 0.71, 0.78]
    assert [r["best"] for r in rows] == [0.70, 0.72, 0.75, 0.75, 0.78]
    assert [r["is_best"] for r in rows] == [True, True, True, False, True]
    assert [r["baseline"] for r in rows] == ["ce_only", "kd", None, None, None]


def test_history_best_so_far_minimize():
    values = [3.0, 5.0, 2.0, 2.0, 1.0, 4.0]
    study = make_study(
        [trial(value=v, kd_weight=i / 10) for i, v in enumerate(values)], directions=("minimize",)
    )
    assert [r["best"] for r in data.history(study)] == [3.0, 3.0, 2.0, 2.0, 1.0, 1.0]
    assert [r["is_best"] for r in data.history(study)] == [True, False, True, False, True, False]


def test_frozen_trials_with_directions_match_study(study):
    trials = study.get_trials()
    assert data.history(trials, ["maximize"]) == data.history(study)
    assert data.leaderboard(trials, directions=["maximize"]) == data.leaderboard(study)
    # the same values read as a minimisation flip the order
    assert [r["number"] for r in data.leaderboard(trials, directions=["minimize"])] == [0, 5, 1, 2, 6]


def test_leaderboard_order_and_gains(study):
    rows = data.leaderboard(study)
    assert [r["number"] for r in rows] == [6, 2, 1, 5, 0]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["baseline"] for r in rows] == [None, None, "kd", None, "ce_only"]
    assert [r["is_baseline"] for r in rows] == [False, False, True, False, True]
    assert [r["gain_vs_ce"] for r in rows] == pytest.approx([0.08, 0.05, 0.02, 0.01, 0.0])
    assert [r["gain_vs_kd"] for r in rows] == pytest.approx([0.06, 0.03, 0.0, -0.01, -0.02])
    top = rows[0]
    assert top["student"] == "resnet14" and top["n_params"] == 175_000 and top["epochs"] == 10
    assert top["params"]["ce_weight"] == 0.3
    assert "ce_weight" not in rows[2]["params"]  # conditional param absent


def test_leaderboard_k_keeps_baselines(study):
    assert [r["number"] for r in data.leaderboard(study, k=2)] == [6, 2, 1, 0]
    assert [r["rank"] for r in data.leaderboard(study, k=2)] == [1, 2, 3, 5]
    assert [r["number"] for r in data.leaderboard(study, k=2, include_baselines=False)] == [6, 2]


def test_leaderboard_minimize_gains_positive_when_better():
    study = make_study(
        [
            trial(value=3.0, baseline="ce", kd_weight=0.0),
            trial(value=2.5, baseline="kd", kd_weight=0.9),
            trial(value=2.0, kd_weight=0.5),
        ],
        directions=("minimize",),
    )
    rows = data.leaderboard(study)
    assert [r["number"] for r in rows] == [2, 1, 0]
    assert [r["gain_vs_ce"] for r in rows] == pytest.approx([1.0, 0.5, 0.0])
    assert [r["gain_vs_kd"] for r in rows] == pytest.approx([0.5, 0.0, -0.5])


def test_leaderboard_without_completed_baselines():
    study = make_study(
        [trial(TrialState.FAIL, baseline="ce", kd_weight=0.0), trial(value=0.6, kd_weight=0.4)]
    )
    (row,) = data.leaderboard(study)
    assert row["gain_vs_ce"] is None and row["gain_vs_kd"] is None
    s = data.summary(study)
    assert s["baselines"]["ce_only"] == {"number": 0, "state": "FAIL", "value": None}
    assert s["baselines"]["kd"] is None
    assert s["best_searched"] == {"number": 1, "value": 0.6, "gain_vs_ce": None, "gain_vs_kd": None,
                                 "description": None, "student": None}


def test_summary(study):
    s = data.summary(study)
    assert s["counts"] == {"RUNNING": 1, "COMPLETE": 5, "PRUNED": 2, "FAIL": 1, "WAITING": 0}
    assert s["n_trials"] == 9
    assert s["best_value"] == 0.78 and s["best_trial"] == 6 and s["best_baseline"] is None
    assert s["best_searched"]["number"] == 6
    assert s["best_searched"]["gain_vs_ce"] == pytest.approx(0.08)
    assert s["best_searched"]["gain_vs_kd"] == pytest.approx(0.06)
    assert s["baselines"] == {
        "ce_only": {"number": 0, "state": "COMPLETE", "value": 0.70},
        "kd": {"number": 1, "state": "COMPLETE", "value": 0.72},
    }
    assert s["teacher"]["name"] == "resnet56" and s["teacher"]["val_acc"] == 0.93
    assert s["dataset"] == "cifar10" and s["autokd_version"] == "0.1.0"
    assert s["total_epochs"] == 10 + 10 + 10 + 2 + 1 + 10 + 10 + 0
    assert s["total_train_time_s"] == pytest.approx(61.0)
    assert s["directions"] == ["maximize"] and s["objectives"] == ["val_acc"]
    assert s["multi_objective"] is False and s["pareto_size"] is None


def test_summary_empty_study():
    s = data.summary(make_study([]))
    assert s["n_trials"] == 0 and s["best_value"] is None and s["best_searched"] is None
    assert s["total_epochs"] == 0
    assert data.history(make_study([])) == [] and data.leaderboard(make_study([])) == []


def test_trials_table(study):
    rows = data.trials_table(study)
    assert [r["number"] for r in rows] == list(range(9))
    assert [r["state"] for r in rows][3:5] == ["PRUNED", "FAIL"]
    assert len({tuple(r) for r in rows}) == 1  # same columns in every row
    assert rows[0]["value"] == 0.70 and rows[4]["value"] is None and rows[4]["values"] is None
    assert rows[2]["params_ce_weight"] == 0.5 and rows[0]["params_ce_weight"] is None
    assert rows[2]["params_student"] == "resnet14"
    assert rows[2]["user_attrs_recipe.kd.temperature"] == 3.0
    assert rows[2]["user_attrs_recipe.kd.loss"] == "kl"
    assert rows[3]["user_attrs_prune_reason"] == "intermediate accuracy"
    assert rows[0]["user_attrs_baseline"] == "ce" and rows[0]["user_attrs_params"] == 78_000
    assert rows[0]["duration_s"] is not None and rows[8]["duration_s"] is None


def test_intermediate(study):
    rows = data.intermediate(study)
    by = {r["number"]: r for r in rows}
    assert sorted(by) == [0, 1, 2, 3, 5, 6, 8]  # 4 (fail) and 7 (proxy-pruned) reported nothing
    assert by[3]["state"] == "PRUNED" and by[3]["points"] == [(1, 0.3), (2, 0.35)]
    assert by[3]["prune_reason"] == "intermediate accuracy"
    assert by[8]["state"] == "RUNNING"
    assert by[0]["baseline"] == "ce_only" and by[0]["points"][-1] == (3, 0.70)


def test_importances_need_two_completed_trials():
    study = make_study([trial(value=0.5, kd_weight=0.3), trial(TrialState.PRUNED, kd_weight=0.6)])
    imp = data.importances(study)
    assert imp == {} and "≥2 completed searched trials" in imp.reason


def test_importances_need_varying_params():
    study = make_study([trial(value=0.5, kd_weight=0.3), trial(value=0.6, kd_weight=0.3)])
    imp = data.importances(study)
    assert imp == {} and imp.reason


def test_importances(study):
    imp = data.importances(study)
    assert imp.reason is None
    assert imp and set(imp) <= {"student", "temperature", "kd_weight", "ce_weight", "lr"}
    assert sum(imp.values()) == pytest.approx(1.0)
    assert list(imp.values()) == sorted(imp.values(), reverse=True)


def test_importances_multi_objective(mo_study):
    imp = data.importances(mo_study)
    assert imp.reason is None and set(imp) <= {"student", "kd_weight"} and imp


def test_importances_error_becomes_reason(monkeypatch, study):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(data.optuna.importance, "get_param_importances", boom)
    imp = data.importances(study)
    assert imp == {} and "RuntimeError: boom" in imp.reason


def test_parallel(study):
    par = data.parallel(study)
    assert par["objective"] == "val_acc"
    assert par["params"] == ["ce_weight", "kd_weight", "lr", "student", "temperature"]
    assert par["categorical"] == {"student": ["resnet8", "resnet14", "mobilenet_tiny"]}
    assert par["log"] == ["lr"]
    assert [r["number"] for r in par["rows"]] == [0, 1, 2, 5, 6]
    assert [r["value"] for r in par["rows"]] == [0.70, 0.72, 0.75, 0.71, 0.78]
    assert [r["params"]["ce_weight"] for r in par["rows"]] == [None, None, 0.5, None, 0.3]
    assert all(isinstance(r["params"]["student"], str) for r in par["rows"])


def test_parallel_categorical_non_string_kept_as_strings():
    from optuna.distributions import CategoricalDistribution

    dist = {"width": CategoricalDistribution([16, 32, None])}
    from optuna.trial import create_trial

    study = make_study(
        [create_trial(value=v, params={"width": w}, distributions=dist) for v, w in ((0.5, 16), (0.6, None))]
    )
    par = data.parallel(study)
    assert par["categorical"] == {"width": ["16", "32", "None"]}
    assert [r["params"]["width"] for r in par["rows"]] == ["16", "None"]


def test_proxy_vs_accuracy(study):
    rows = data.proxy_vs_accuracy(study)
    assert [(r["number"], r["proxy_score"], r["val_acc"]) for r in rows] == [
        (2, 12.0, 0.75),
        (5, 5.0, 0.71),
        (6, 15.0, 0.78),
    ]  # trial 3's 0.35 is a pruned trial's partial value: left out
    assert data.rank_correlation([r["proxy_score"] for r in rows], [r["val_acc"] for r in rows]) == 1.0


def test_rank_correlation():
    assert data.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert data.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)
    assert data.rank_correlation([1, 2], [1, 2]) is None
    assert data.rank_correlation([1, 1, 1], [1, 2, 3]) is None


def test_multi_objective(mo_study):
    # single objective: accuracy vs the recorded parameter count (78k: 0.70, 0.72; 175k: 0.75, 0.78; 50k: 0.71)
    so = data.pareto(make_study(single_objective_trials()))
    assert [r["number"] for r in so if r["on_front"]] == [1, 5, 6] and so[0]["values"] == [0.70, 78_000]
    rows = data.pareto(mo_study)
    assert [r["number"] for r in rows if r["on_front"]] == [0, 1, 3, 4]
    assert rows[2]["values"] == [0.72, 2_000_000]
    lb = data.leaderboard(mo_study)
    assert [r["number"] for r in lb] == [3, 1, 2, 0, 4]
    assert [r["gain_vs_ce"] for r in lb] == pytest.approx([0.10, 0.05, 0.02, 0.0, -0.05])
    assert [r["gain_vs_kd"] for r in lb] == pytest.approx([0.15, 0.10, 0.07, 0.05, 0.0])
    assert [r["best"] for r in data.history(mo_study)] == [0.70, 0.75, 0.75, 0.80, 0.80]
    s = data.summary(mo_study)
    assert s["multi_objective"] and s["pareto_size"] == 4 and s["objectives"] == ["val_acc", "params"]
    assert s["best_trial"] == 3 and s["directions"] == ["maximize", "minimize"]


def test_metric_names_used(mo_study):
    with pytest.warns(Warning):
        mo_study.set_metric_names(["top1", "n_params"])
    assert data.objective_names(mo_study) == ["top1", "n_params"]
    assert data.parallel(mo_study)["objective"] == "top1"


def test_sqlite_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(single_objective_trials(), storage=storage)
    import optuna

    loaded = optuna.load_study(study_name="kd-test", storage=storage)
    assert [r["number"] for r in data.leaderboard(loaded)] == [6, 2, 1, 5, 0]
    assert data.summary(loaded)["counts"]["PRUNED"] == 2


def test_gains_use_the_baseline_with_the_same_student():
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction="maximize")
    for value, kind, student in [(0.80, "ce", "cnn(width=2)"), (0.85, "kd", "cnn(width=2)"),
                                 (0.90, "ce", "cnn(width=4)"), (0.92, "kd", "cnn(width=4)")]:
        study.add_trial(create_trial(value=value, state=TrialState.COMPLETE,
                                     user_attrs={"baseline": kind, "student": student}))
    dist = {"lr": FloatDistribution(0.01, 1)}
    study.add_trial(create_trial(value=0.95, params={"lr": 0.1}, distributions=dist,
                                 user_attrs={"student": "cnn(width=4)"}))
    study.add_trial(create_trial(value=0.88, params={"lr": 0.2}, distributions=dist,
                                 user_attrs={"student": "cnn(width=2)"}))
    rows = {r["number"]: r for r in data.leaderboard(study)}
    assert rows[4]["gain_vs_ce"] == pytest.approx(0.05) and rows[4]["gain_vs_kd"] == pytest.approx(0.03)
    assert rows[5]["gain_vs_ce"] == pytest.approx(0.08) and rows[5]["gain_vs_kd"] == pytest.approx(0.03)


def test_short_labels_of_dotted_parameters():
    assert data.short_label("terms.0.kd.temperature") == "kd.temperature"
    assert data.short_label("terms.0.loss") == "terms.loss"
    assert data.short_label("lr") == "lr"
    assert data.short_label("a.x.temperature", taken=["x.temperature"]) == "a.x.temperature"


def test_exact_duplicate_recipes_are_flagged():
    import json

    import optuna

    from autokd.report.data.tables import duplicate_recipes

    def t(number, recipe, state=optuna.trial.TrialState.COMPLETE, **attrs):
        return optuna.trial.FrozenTrial(number=number, state=state, value=0.5, datetime_start=None,
                                        datetime_complete=None, params={}, distributions={},
                                        user_attrs={"recipe": json.dumps(recipe), **attrs}, system_attrs={},
                                        intermediate_values={}, trial_id=number)

    a = {"student": {"name": "cnn"}, "ce_weight": 0.5, "seed": 0}
    b = {"student": {"name": "cnn"}, "ce_weight": 0.7, "seed": 0}
    trials = [t(0, a), t(1, b), t(2, {**a, "seed": 3}), t(3, a, baseline="kd"), t(4, b)]
    assert duplicate_recipes(trials) == [[0, 2], [1, 4]]
    assert duplicate_recipes(trials[:2]) == []


def test_the_run_register_is_in_the_summary_and_the_study_card():
    runs = [{"worker": "vm:11", "name": "run 0", "sampler_seed": 123, "trials_stored": 4, "started": "2026-11-30T10:00:00"},
            {"worker": "vm:12", "name": "gpu1", "sampler_seed": 456, "trials_stored": 9, "started": "2026-11-30T11:00:00"}]
    s = data.summary(make_study([], runs=runs))
    assert s["runs"] == [{k: r[k] for k in ("name", "worker", "sampler_seed", "trials_stored", "started")}
                         for r in runs]
    from autokd.report.sections import summary_html

    assert "runs (sampler seeds)" in summary_html(s) and "2: run 0 (123), gpu1 (456)" in summary_html(s)
    assert data.summary(make_study([]))["runs"] == []  # a study written before the register
