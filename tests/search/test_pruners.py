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
