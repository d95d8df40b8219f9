"""The best trial of a study and its recipe exported with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..recipe import Provenance
from . import trial_record as tr

if TYPE_CHECKING:
    from ..config import StudyConfig

__all__ = ["best_trial", "export_best"]


def best_trial(study):
    """The completed trial with the highest validation accuracy (for multi-objective studies: the most
    accurate trial of the Pareto front); baselines included, so a baseline that wins is reported as such."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return None
    pool = study.best_trials if len(study.directions) > 1 else done
    return max(pool, key=lambda t: (t.values[0], -t.number))


def export_best(cfg: StudyConfig, study, path: Path) -> Path:
    """Write the best trial's recipe; its provenance names the study, the trial, its metrics and the
    validation accuracy of the baselines trained with the same student."""
    import optuna

    t = best_trial(study)
    if t is None:
        raise ConfigError(f"study {cfg.name!r} has no completed trial to export yet")
    recipe = tr.recipe_of(t)
    metrics = {k.value: t.user_attrs[k.value] for k in (tr.Key.VAL_ACC, tr.Key.PARAMS, tr.Key.FLOPS,
                                                        tr.Key.LATENCY_MS, tr.Key.EPOCHS)
               if k.value in t.user_attrs}
    student = tr.student_of(t)
    baselines = {}
    for b in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        kind = tr.baseline_of(b)
        if kind is not None and b.values and tr.student_of(b) == student:
            baselines[f"{kind.value}_val_acc"] = b.values[0]
    baseline = tr.baseline_of(t)
    recipe.provenance = Provenance(
        study=cfg.name, trial=t.number, seed=recipe.seed, metrics={**metrics, **baselines},
        teacher=dict(study.user_attrs.get(tr.StudyKey.TEACHER.value, {})), data=cfg.data.model_dump(mode="json"),
        study_file=str(cfg.source) if cfg.source else None, baseline=baseline.value if baseline else None,
    )
    return recipe.dump(path)
