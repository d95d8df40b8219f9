"""The median pruner reads completed trials once per trial: the same decisions as Optuna's MedianPruner with
one worker, on the same reported curves, and one storage read per trial instead of one per epoch."""

from __future__ import annotations

import pickle
import random

import optuna
import pytest

from autokd.search import pruners
from autokd.search.completed_once import CompletedOncePerTrial

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _decisions(pruner, curves) -> list[tuple[int, int | None]]:
    """Run ``curves`` (one list of per-epoch values per trial) through a study with ``pruner``; returns
    (trial number, epoch it was pruned at or None)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    out = []
    for curve in curves:
        trial = study.ask()
        stopped = None
        for epoch, v in enumerate(curve):
            trial.report(v, epoch)
            if trial.should_prune():
                stopped = epoch
                break
        if stopped is None:
            study.tell(trial, curve[-1])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        out.append((trial.number, stopped))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decisions_equal_optunas_median_pruner(seed):
    rng = random.Random(seed)
    curves = []
    for _ in range(40):
        level, slope = rng.uniform(0.2, 0.8), rng.uniform(0, 0.03)
        curves.append([level + slope * e + rng.gauss(0, 0.02) for e in range(12)])
    ours = _decisions(pruners.create("median", 12), curves)
    theirs = _decisions(optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=4), curves)
    assert ours == theirs
    assert sum(1 for _, s in ours if s is not None) >= 5  # the comparison covers real pruning decisions


def test_completed_trials_are_read_once_per_trial(monkeypatch):
    study = optuna.create_study(direction="maximize")
    for v in (0.5, 0.6, 0.7, 0.8, 0.9):
        study.add_trial(optuna.create_trial(value=v, intermediate_values={e: v for e in range(10)}))
    pruner = CompletedOncePerTrial(optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0))
    reads = []
    real = study.get_trials
    monkeypatch.setattr(study, "get_trials", lambda *a, **k: (reads.append(k.get("states")), real(*a, **k))[1])
    for n in range(2):
        trial = study.ask()
        for e in range(10):
            trial.report(0.55 + 0.3 * n, e)
            frozen = study._storage.get_trial(trial._trial_id)
            assert pruner.prune(study, frozen) == (n == 0)  # below the median 0.7, then above it
        study.tell(trial, 0.55 + 0.3 * n)
    assert len(reads) == 2  # one read per trial, not per epoch
    clone = pickle.loads(pickle.dumps(pruner))  # picklable (a Tune scheduler carries it); the snapshot is not
    assert clone._completed == [] and isinstance(clone.inner, optuna.pruners.MedianPruner)


def test_a_primed_trial_reads_nothing_and_decides_as_optuna(monkeypatch):
    """The worker loop hands its own read of the study to the pruner when it asks a trial: the trial's
    epochs then read nothing, and the decisions are Optuna's median pruner's."""
    from autokd.search.backends.optuna_backend import Decider

    study = optuna.create_study(direction="maximize")
    for v in (0.5, 0.6, 0.7, 0.8, 0.9):
        study.add_trial(optuna.create_trial(value=v, intermediate_values={e: v for e in range(10)}))
    # a pruned trial does not count: with it, the median at step 0 would be 0.75 and 0.72 would be pruned
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={0: 0.99}))
    pruner = CompletedOncePerTrial(optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0))
    optunas = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    study.pruner = pruner
    decide = Decider(cfg=None, space=None)
    monkeypatch.setattr(decide, "_tidy", lambda s: None)
    reads = []
    real = study.get_trials
    monkeypatch.setattr(study, "get_trials", lambda *a, **k: (reads.append(k.get("states")), real(*a, **k))[1])
    decisions = []
    for accs in ((0.72, 0.69), (0.62, 0.65)):
        assert decide(study, 10) == "ask"
        trial = study.ask()
        decide.prime(study, trial)
        assert [t.value for t in pruner._completed] == [0.5, 0.6, 0.7, 0.8, 0.9]  # the completed ones only
        reads.clear()
        for e, acc in enumerate(accs):
            trial.report(acc, e)
            frozen = study._storage.get_trial(trial._trial_id)
            decisions.append((bool(pruner.prune(study, frozen)), bool(optunas.prune(study, frozen))))
        assert reads == [(optuna.trial.TrialState.COMPLETE,)] * 2  # only Optuna's own pruner read the study
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert decisions == [(False, False), (False, False), (True, True), (True, True)]
