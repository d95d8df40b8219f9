"""Run a study end to end: prepare data and teacher once, search, export the best recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import StudyConfig
from ..errors import ConfigError
from ..recipe import Provenance, Recipe
from .space import SearchSpace

__all__ = ["StudyContext", "prepare", "search", "load_study", "best_trial", "export_best"]


@dataclass
class StudyContext:
    cfg: StudyConfig
    space: SearchSpace
    data: Any
    teacher: Any
    teacher_info: dict
    trainer: Any
    device: Any


def prepare(cfg: StudyConfig, *, log=print, on_epoch=None, need_teacher: bool = True) -> StudyContext:
    """Load the space (validated before anything trains), the data and the teacher (trained once, cached)."""
    from .. import models
    from ..train import Trainer, make_teacher_source, obtain_teacher, resolve_device

    space = SearchSpace.load(cfg.space_path)
    device = resolve_device(cfg.device)
    data = cfg.data.create(cfg.base_dir)
    # validate the space against the study's models before anything trains
    probe = models.create(cfg.teacher.name, data.num_classes, in_channels=data.input_shape[0], **cfg.teacher.kwargs)
    space.check_models(models.shapes(probe, data.input_shape), data.num_classes, data.input_shape)
    del probe
    teacher, info = (None, {})
    source = None
    if need_teacher:
        t_data = data
        if cfg.teacher.train_fraction != cfg.data.train_fraction and not cfg.teacher.checkpoint:
            t_data = cfg.data.model_copy(update={"train_fraction": cfg.teacher.train_fraction}).create(cfg.base_dir)
        teacher, info = obtain_teacher(cfg.teacher, t_data, cfg.study_dir, device, log=log)
        source = make_teacher_source(cfg.teacher_cache, teacher, data, device,
                                     cache_dir=cfg.study_dir / "cache", key=info.get("hash", "ckpt"))
    trainer = Trainer(data, teacher=teacher, teacher_source=source, device=device, on_epoch=on_epoch,
                      cache_dir=cfg.study_dir / "cache")
    return StudyContext(cfg, space, data, teacher, info, trainer, device)


def search(cfg: StudyConfig, *, trials: int | None = None, timeout: float | None = None, progress=None,
           log=print) -> Any:
    """Run (or resume) the study; write ``best_recipe.yaml``. Returns the ``optuna.Study``."""
    from . import samplers
    from .backends.optuna_backend import open_study, run_optuna

    if cfg.search.backend != "optuna":
        raise ConfigError(f"search.backend: {cfg.search.backend!r} is not available yet; use optuna")
    multi = samplers.is_multi_objective(cfg.search.sampler)
    ctx = prepare(cfg, log=log, on_epoch=(progress.epoch if progress is not None else None))
    epochs = cfg.search.epochs or ctx.space.default_optim().epochs
    study = open_study(cfg, multi_objective=multi, epochs=epochs, space=ctx.space)
    from .._version import __version__

    study.set_user_attr("autokd_version", __version__)
    study.set_user_attr("study_name", cfg.name)
    study.set_user_attr("space", str(cfg.space))
    study.set_user_attr("dataset", cfg.data.model_dump(mode="json"))
    study.set_user_attr("teacher", {k: v for k, v in ctx.teacher_info.items() if k != "config"})
    study.set_user_attr("multi_objective", multi)
    if cfg.search.mode == "diswot":
        from .backends.optuna_backend import enqueue_baselines
        from .diswot import run_diswot

        if cfg.search.baselines:
            enqueue_baselines(study, ctx.space.baseline_students(cfg.search.baseline_students))
        run_diswot(ctx, study, cfg.search.diswot, progress=progress, epochs=cfg.search.epochs, log=log)
    else:
        run_optuna(ctx, study, trials=trials or cfg.search.trials, timeout=timeout or cfg.search.timeout,
                   epochs=cfg.search.epochs, multi_objective=multi, progress=progress)
    if best_trial(study) is not None:
        export_best(cfg, study, cfg.study_dir / "best_recipe.yaml")
    return study


def load_study(cfg: StudyConfig):
    import optuna

    from .backends.optuna_backend import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.storage_url.startswith("sqlite") and not (cfg.study_dir / "study.db").is_file() and not cfg.search.storage:
        raise ConfigError(f"study {cfg.name!r} has not been run yet (no {cfg.study_dir / 'study.db'}); "
                          f"run `autokd search {cfg.source}` first")
    try:
        return optuna.load_study(study_name=cfg.name, storage=make_storage(cfg.storage_url))
    except KeyError:
        raise ConfigError(f"study {cfg.name!r} not found in {cfg.storage_url}") from None


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
    t = best_trial(study)
    if t is None:
        raise ConfigError(f"study {cfg.name!r} has no completed trial to export yet")
    recipe = Recipe.from_dict(t.user_attrs["recipe"], source=f"trial {t.number}")
    metrics = {k: t.user_attrs[k] for k in ("val_acc", "params", "flops", "latency_ms", "epochs")
               if k in t.user_attrs}
    baselines = {}
    for b in study.get_trials(deepcopy=False):
        kind = b.user_attrs.get("baseline")
        if kind and b.values:
            baselines[f"{kind}_val_acc"] = b.values[0]
    recipe.provenance = Provenance(
        study=cfg.name, trial=t.number, seed=recipe.seed, metrics={**metrics, **baselines},
        teacher=dict(study.user_attrs.get("teacher", {})), data=cfg.data.model_dump(mode="json"),
        study_file=str(cfg.source) if cfg.source else None, baseline=t.user_attrs.get("baseline"),
    )
    return recipe.dump(path)
