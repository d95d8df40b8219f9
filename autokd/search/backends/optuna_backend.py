"""Optuna backend: the study runs in this process with ``study.optimize`` (several processes may share it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import trial_record as tr
from ..objective import Objective

if TYPE_CHECKING:
    from ...context import StudyContext
    from ..space import SearchSpace

__all__ = ["run_optuna", "enqueue_baselines", "counted", "make_sampler", "make_pruner"]


def make_sampler(cfg, space: SearchSpace | None = None):
    """The study's sampler, seeded with the study seed; tree samplers get the space's decision tree."""
    from .. import samplers

    kw = dict(cfg.search.sampler_kwargs)
    if space is not None and samplers.SAMPLERS.meta(cfg.search.sampler).get("uses_space"):
        kw.setdefault("space", space)  # tree-walking samplers learn the declared decision tree
    if cfg.search.sampler == "evolution":
        kw.setdefault("population_size", max(4, min(16, cfg.search.trials // 3)))
    return samplers.create(cfg.search.sampler, seed=cfg.seed, **kw)


def make_pruner(cfg, epochs: int):
    from .. import pruners

    return pruners.create(cfg.search.pruner, epochs, **cfg.search.pruner_kwargs)


def enqueue_baselines(study, students=None) -> list[tuple[str, str | None]]:
    """Enqueue the CE-only and plain-KD trials (for each of ``students``, a list of ``StudentSpec``; default:
    the space's first student) unless the study already has them (resume)."""
    import optuna

    have = {(tr.baseline_of(t), t.user_attrs.get(tr.Key.BASELINE_STUDENT_LABEL.value))
            for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.FAIL}
    added = []
    for spec in students or [None]:
        label = spec.label() if spec is not None else None
        for kind in tr.Baseline:
            if (kind, label) not in have:
                study.enqueue_trial({}, user_attrs=tr.baseline_attrs(kind, spec))
                added.append((kind.value, label))
    return added


def counted(study) -> int:
    """Finished searched trials (complete or pruned), baselines excluded."""
    import optuna

    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False, states=ok) if not tr.is_baseline(t))


def run_optuna(ctx: StudyContext, space: SearchSpace, study, *, trials: int, timeout: float | None,
               epochs: int | None, multi_objective: bool, progress=None) -> int:
    """Run until the study holds ``trials`` finished searched trials (plus its baselines). Returns how
    many trials this call ran."""
    import optuna

    objective = Objective(ctx, space, epochs=epochs, multi_objective=multi_objective, progress=progress)
    if ctx.cfg.search.baselines:
        enqueue_baselines(study, space.baseline_students(ctx.cfg.search.baseline_students))
    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    pending_baselines = sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
                            if tr.is_baseline(t))
    todo = max(0, trials - counted(study)) + pending_baselines
    if progress is not None:
        progress.search_started(study, todo, trials)
    if todo == 0:
        return 0

    def stop_when_done(study, trial) -> None:
        if progress is not None:
            progress.trial_finished(study, trial)
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if counted(study) >= trials and not waiting:
            study.stop()

    before = len(study.get_trials(deepcopy=False, states=ok))
    study.optimize(objective, n_trials=todo, timeout=timeout, callbacks=[stop_when_done],
                   catch=(RuntimeError,), gc_after_trial=True)
    return len(study.get_trials(deepcopy=False, states=ok)) - before
