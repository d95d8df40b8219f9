"""Hand-made studies for the report tests (a uniquely named module, so other test dirs' conftest.py
cannot shadow it)."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDENT = CategoricalDistribution(["resnet8", "resnet14", "mobilenet_tiny"])
DISTS = {
    "student": STUDENT,
    "temperature": FloatDistribution(1.0, 10.0),
    "kd_weight": FloatDistribution(0.0, 1.0),
    "ce_weight": FloatDistribution(0.0, 1.0),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
}


def trial(state=TrialState.COMPLETE, value=None, values=None, inter=None, **params_and_attrs):
    """A FrozenTrial; keys of DISTS are params, everything else a user attr."""
    params = {k: v for k, v in params_and_attrs.items() if k in DISTS}
    attrs = {k: v for k, v in params_and_attrs.items() if k not in DISTS}
    attrs = {("params" if k == "n_params" else k): v for k, v in attrs.items()}
    return create_trial(
        state=state,
        value=value,
        values=values,
        params=params,
        distributions={k: DISTS[k] for k in params},
        intermediate_values=inter or {},
        user_attrs=attrs,
    )


def single_objective_trials():
    P, F, R = TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING
    return [
        # 0: CE baseline
        trial(
            value=0.70,
            inter={1: 0.5, 2: 0.65, 3: 0.70},
            student="resnet8",
            temperature=1.0,
            kd_weight=0.0,
            lr=0.01,
            baseline="ce",
            epochs=10,
            n_params=78_000,
            val_acc=0.70,
            train_time_s=30.0,
            seed=0,
        ),
        # 1: KD baseline
        trial(
            value=0.72,
            inter={1: 0.55, 2: 0.68, 3: 0.72},
            student="resnet8",
            temperature=4.0,
            kd_weight=0.9,
            lr=0.01,
            baseline="kd",
            epochs=10,
            n_params=78_000,
            val_acc=0.72,
            train_time_s=31.0,
        ),
        # 2: searched, with the conditional ce_weight and a nested recipe
        trial(
            value=0.75,
            inter={1: 0.6, 2: 0.7, 3: 0.75},
            student="resnet14",
            temperature=3.0,
            kd_weight=0.5,
            ce_weight=0.5,
            lr=0.005,
            epochs=10,
            n_params=175_000,
            flops=25_000_000,
            latency_ms=1.5,
            proxy_score=12.0,
            val_acc=0.75,
            recipe={"kd": {"temperature": 3.0, "loss": "kl"}},
        ),
        # 3: pruned by intermediate accuracy
        trial(
            P,
            inter={1: 0.3, 2: 0.35},
            student="resnet8",
            temperature=8.0,
            kd_weight=0.2,
            lr=0.05,
            epochs=2,
            proxy_score=3.0,
            val_acc=0.35,
            prune_reason="intermediate accuracy",
        ),
        # 4: failed
        trial(F, student="mobilenet_tiny", temperature=2.0, kd_weight=0.1, lr=0.001, epochs=1),
        # 5: searched
        trial(
            value=0.71,
            inter={1: 0.5, 2: 0.71},
            student="mobilenet_tiny",
            temperature=2.0,
            kd_weight=0.7,
            lr=0.02,
            epochs=10,
            proxy_score=5.0,
            val_acc=0.71,
            n_params=50_000,
        ),
        # 6: searched, best
        trial(
            value=0.78,
            inter={1: 0.62, 2: 0.74, 3: 0.78},
            student="resnet14",
            temperature=5.0,
            kd_weight=0.6,
            ce_weight=0.3,
            lr=0.003,
            epochs=10,
            proxy_score=15.0,
            val_acc=0.78,
            n_params=175_000,
        ),
        # 7: pruned by the zero-cost proxy before training
        trial(
            P,
            student="mobilenet_tiny",
            temperature=9.0,
            kd_weight=0.3,
            lr=0.0002,
            epochs=0,
            proxy_score=0.5,
            prune_reason="proxy score below threshold",
        ),
        # 8: still running
        trial(R, inter={1: 0.4}, student="resnet8", temperature=6.0, kd_weight=0.4, lr=0.01),
    ]


def make_study(trials, directions=("maximize",), storage=None, **user_attrs):
    study = optuna.create_study(
        storage=storage or optuna.storages.InMemoryStorage(),
        directions=list(directions),
        study_name="kd-test",
    )
    for t in trials:
        study.add_trial(t)
    for k, v in user_attrs.items():
        study.set_user_attr(k, v)
    return study


STUDY_ATTRS = {
    "autokd_version": "0.1.0",
    "study_name": "kd-test",
    "space": "spaces/kd.yaml",
    "dataset": "cifar10",
    "teacher": {"name": "resnet56", "val_acc": 0.93, "test_acc": 0.92, "params": 850_000},
}


class _Attrs(dict):
    """Collects what the trial_record writers set (they call ``set_user_attr``)."""

    def set_user_attr(self, key, value):
        self[key] = value


def recipe_trial(value, *, loss="kd", temperature=4.0, weight=0.9, scheme="standard", width=2, baseline=None,
                 state=TrialState.COMPLETE, number_params=True, **extra_attrs):
    """A trial shaped like the objective writes it: the recipe recorded through trial_record; a baseline has
    no parameters (as in real studies), a searched trial has its sampled parameters."""
    from autokd.recipe import Recipe
    from autokd.search import trial_record as tr

    terms = [] if baseline == "ce_only" else [{"loss": loss, "weight": weight, "params": {"temperature": temperature}}]
    recipe = Recipe.from_dict({"student": {"name": "cnn", "kwargs": {"width": width}}, "ce_weight": 0.1 if terms else 1,
                               "terms": terms, "scheme": {"name": scheme}})
    attrs = _Attrs()
    tr.record_recipe(attrs, recipe)
    if baseline:
        attrs.update(tr.baseline_attrs(tr.Baseline(baseline), recipe.student))
    tr.record_metrics(attrs, {"val_acc": value, "params": 1000 * width, "epochs": 15})
    attrs.update(extra_attrs)
    params, dists = {}, {}
    if not baseline and number_params:
        params = {"loss": loss, "temperature": temperature, "weight": weight, "scheme": scheme}
        dists = {"loss": CategoricalDistribution(["kd", "dkd", "fitnet"]), "temperature": FloatDistribution(1, 10),
                 "weight": FloatDistribution(0, 1), "scheme": CategoricalDistribution(["standard", "dlb"])}
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None, params=params,
                        distributions=dists, user_attrs=dict(attrs),
                        intermediate_values={0: value - 0.1, 1: value} if value is not None else {})


def recipe_study():
    """Baselines for widths 2 and 3 (no parameters), then searched trials with real recipes."""
    trials = [
        recipe_trial(0.80, baseline="ce_only", width=2), recipe_trial(0.83, baseline="kd", width=2),
        recipe_trial(0.86, baseline="ce_only", width=3), recipe_trial(0.88, baseline="kd", width=3),
        recipe_trial(0.85, loss="dkd", temperature=2.0, width=2),  # +2 points over KD (w2)
        recipe_trial(0.90, loss="kd", temperature=6.0, width=3, scheme="dlb"),  # +2 over KD (w3)
        recipe_trial(0.84, loss="fitnet", temperature=3.0, width=3),  # -4 over KD (w3)
        recipe_trial(0.86, loss="dkd", temperature=8.0, width=2, scheme="dlb"),  # +3
        recipe_trial(0.70, loss="kd", temperature=9.0, width=2, state=TrialState.PRUNED,
                     prune_reason="pruned at epoch 1"),
        recipe_trial(0.81, loss="fitnet", temperature=1.5, width=2),  # -2
    ]
    return make_study(trials, **STUDY_ATTRS)


def demo_sized_study(n: int = 40):
    """A study the size of the demo: 4 baselines and ``n`` searched trials over losses, temperatures, weights,
    schemes and two students (values deterministic; every 7th trial pruned)."""
    trials = list(recipe_study().trials[:4])
    losses = ["kd", "dkd", "fitnet"]
    for i in range(n):
        width = 2 + i % 2
        state = TrialState.PRUNED if i % 7 == 6 else TrialState.COMPLETE
        value = 0.80 + 0.05 * width / 3 + 0.01 * ((i * 37) % 11) / 11
        trials.append(recipe_trial(value, loss=losses[i % 3], temperature=1.0 + (i * 13) % 9, weight=0.1 + (i % 9) / 10,
                                   scheme=["standard", "dlb"][(i // 3) % 2], width=width, state=state,
                                   **({"prune_reason": f"pruned at epoch {i % 5}"} if state == TrialState.PRUNED else {})))
    return make_study(trials, **STUDY_ATTRS)
