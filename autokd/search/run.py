"""Run a study end to end: open its context once, search with the configured backend, export the best recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import trial_record as tr
from .export import best_trial, export_best
from .space import SearchSpace

if TYPE_CHECKING:
    from ..config import StudyConfig
    from ..context import StudyContext

__all__ = ["run_search", "open_space"]


def open_space(cfg: StudyConfig) -> SearchSpace:
    return SearchSpace.load(cfg.space_path)


def open_context(cfg: StudyConfig, space: SearchSpace, *, log=print, on_epoch=None) -> StudyContext:
    """The study's context, after validating the space against the study's models (before any training)."""
    from ..context import StudyContext

    return StudyContext.open(cfg, log=log, on_epoch=on_epoch,
                             check=lambda t_shapes, data: space.check_models(t_shapes, data.num_classes,
                                                                             data.input_shape))


def run_search(cfg: StudyConfig, *, trials: int | None = None, timeout: float | None = None, progress=None,
               log=print, worker: str | int | None = None, allow_changed: bool = False) -> Any:
    """Run (or resume) the study; write ``best_recipe.yaml``. Returns the ``optuna.Study``.

    Everything is validated before anything trains; a study whose teacher, data or space changed since it
    was created is not resumed unless ``allow_changed``. Terms the space leaves without ``weight`` search
    their loss's weight range for the study's models (:mod:`.weight_ranges`). ``worker`` names this worker when several share the
    study (it seeds the sampler; default: the run's place in the study's run register)."""
    from .._version import __version__
    from . import samplers
    from .backends.optuna_backend import make_pruner, make_sampler
    from .backends.storage import close_lock_connections, open_study
    from .validate import check_fingerprint, validate_study
    from .weight_ranges import space_for_study

    multi = samplers.is_multi_objective(cfg.search.sampler)
    space = open_space(cfg)
    validate_study(cfg, space)
    epochs = cfg.search.fidelity.epochs or cfg.search.epochs or space.default_optim().epochs
    study = open_study(cfg, multi_objective=multi, sampler=make_sampler(cfg, space), pruner=make_pruner(cfg, epochs))
    fingerprint = check_fingerprint(study, cfg, space, allow_changed=allow_changed)
    ctx = open_context(cfg, space, log=log, on_epoch=(progress.epoch if progress is not None else None))
    space = space_for_study(space, cfg, ctx.data)  # default term weight ranges for the study's models
    for key, value in ((tr.StudyKey.AUTOKD_VERSION, __version__), (tr.StudyKey.STUDY_NAME, cfg.name),
                       (tr.StudyKey.SPACE, str(cfg.space)), (tr.StudyKey.DATASET, cfg.data.model_dump(mode="json")),
                       (tr.StudyKey.TEACHER, {k: v for k, v in ctx.teacher_info.items() if k != "config"}),
                       (tr.StudyKey.MULTI_OBJECTIVE, multi)):
        study.set_user_attr(key.value, value)
    try:
        _run(cfg, space, study, ctx, trials=trials, timeout=timeout, progress=progress, log=log, worker=worker,
             multi=multi, fingerprint=fingerprint)
    finally:
        close_lock_connections()
    if best_trial(study) is not None:
        export_best(cfg, study, cfg.study_dir / "best_recipe.yaml")
    return study


def _run(cfg: StudyConfig, space, study, ctx, *, trials, timeout, progress, log, worker, multi, fingerprint) -> None:
    """The search itself: DisWOT's rank-then-train, or the Optuna / Ray Tune loop."""
    from .backends.optuna_backend import enqueue_baselines, run_optuna
    from .backends.storage import study_lock

    if cfg.search.mode == "diswot":
        from .diswot import run_diswot

        if cfg.search.baselines:
            with study_lock(cfg):
                enqueue_baselines(study, space.baseline_students(cfg.search.baseline_students))
        run_diswot(ctx, space, study, cfg.search.diswot, progress=progress, epochs=cfg.search.epochs, log=log,
                   fingerprint=fingerprint)
    else:
        run = run_optuna
        if cfg.search.backend == "ray":
            from .backends.ray_backend import run_ray as run
        run(ctx, space, study, trials=trials or cfg.search.trials, timeout=timeout or cfg.search.timeout,
            epochs=cfg.search.epochs, multi_objective=multi, progress=progress, worker=worker,
            fingerprint=fingerprint)
