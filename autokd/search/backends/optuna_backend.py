"""Optuna backend: RDB storage (SQLite by default), samplers, pruners, baselines, resume."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ..objective import BASELINE_ATTR, Objective

__all__ = ["open_study", "run_optuna", "BASELINES"]

BASELINES = ("ce", "kd")


def make_storage(url: str):
    import warnings

    import optuna

    if url.startswith(("sqlite", "postgresql", "mysql")):
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna but long-standing
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # A crashed worker's trial is failed after the grace period and retried (up to twice).
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=30, grace_period=120,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
                    **kwargs,
                )
        except ImportError as e:
            raise ConfigError(f"search.storage: {url.split(':')[0]} needs a driver ({e}); "
                              "pip install 'autokd[postgres]' for PostgreSQL") from None
    if url == "memory":
        return optuna.storages.InMemoryStorage()
    return url


def open_study(cfg, *, multi_objective: bool, sampler=None, pruner=None, epochs: int = 15, space=None):
    """Create or load (resume) the study named ``cfg.name`` in its storage."""
    import optuna

    from .. import pruners, samplers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler is None:
        kw = dict(cfg.search.sampler_kwargs)
        if space is not None and samplers.SAMPLERS.meta(cfg.search.sampler).get("uses_space"):
            kw.setdefault("space", space)  # tree-walking samplers learn the declared decision tree
        if cfg.search.sampler == "evolution":
            kw.setdefault("population_size", max(4, min(16, cfg.search.trials // 3)))
        sampler = samplers.create(cfg.search.sampler, seed=cfg.seed, **kw)
    if pruner is None:
        pruner = pruners.create(cfg.search.pruner, epochs, **cfg.search.pruner_kwargs)
    kw: dict[str, Any] = {"directions": ["maximize", "minimize"]} if multi_objective else {"direction": "maximize"}
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    storage = make_storage(cfg.storage_url)
    try:
        study = optuna.create_study(storage=storage, study_name=cfg.name, sampler=sampler, pruner=pruner,
                                    load_if_exists=True, **kw)
    except ValueError as e:  # e.g. resuming with a different number of objectives
        raise ConfigError(f"search: cannot resume study {cfg.name!r}: {e}") from None
    if len(study.directions) != (2 if multi_objective else 1):
        raise ConfigError(f"search.sampler: study {cfg.name!r} was created with {len(study.directions)} "
                          f"objective(s); the sampler {cfg.search.sampler!r} needs {2 if multi_objective else 1}")
    return study


def enqueue_baselines(study, students=None) -> list[tuple[str, str]]:
    """Enqueue the CE-only and plain-KD trials (for each of ``students``, a list of ``StudentSpec``; default:
    the space's first student) unless the study already has them (resume)."""
    import optuna

    have = {(t.user_attrs.get(BASELINE_ATTR), t.user_attrs.get("baseline_student_label"))
            for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.FAIL}
    added = []
    for spec in students or [None]:
        label = spec.label() if spec is not None else None
        for kind in BASELINES:
            if (kind, label) not in have:
                attrs = {BASELINE_ATTR: kind}
                if spec is not None:
                    attrs.update(baseline_student=spec.model_dump(mode="json"), baseline_student_label=label)
                study.enqueue_trial({}, user_attrs=attrs)
                added.append((kind, label))
    return added


def counted(study) -> int:
    """Finished searched trials (complete or pruned), baselines excluded."""
    import optuna

    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False, states=ok) if not t.user_attrs.get(BASELINE_ATTR))


def run_optuna(ctx, study, *, trials: int, timeout: float | None, epochs: int | None, multi_objective: bool,
               progress=None) -> int:
    """Run until the study holds ``trials`` finished searched trials (plus its baselines). Returns how
    many trials this call ran."""
    import optuna

    objective = Objective(ctx, epochs=epochs, multi_objective=multi_objective, progress=progress)
    if ctx.cfg.search.baselines:
        enqueue_baselines(study, ctx.space.baseline_students(ctx.cfg.search.baseline_students))
    ok = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    pending_baselines = sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
                            if t.user_attrs.get(BASELINE_ATTR))
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
