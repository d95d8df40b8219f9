"""The study's storage (Optuna RDB: SQLite by default, PostgreSQL for many machines): open, create, load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ConfigError

if TYPE_CHECKING:
    from ...config import StudyConfig

__all__ = ["make_storage", "open_study", "load_study"]


def make_storage(url: str):
    """An Optuna storage for ``url``: RDB URLs get heartbeats (a crashed worker's trial is failed after the
    grace period and retried up to twice); ``memory`` is in-process."""
    import warnings

    import optuna

    if url.startswith(("sqlite", "postgresql", "mysql")):
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna but long-standing
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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


def open_study(cfg: StudyConfig, *, multi_objective: bool, sampler, pruner):
    """Create the study named ``cfg.name`` in its storage, or load it (resume)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
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


def load_study(cfg: StudyConfig):
    """The stored study, read-only use (report, export, status)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.storage_url.startswith("sqlite") and not (cfg.study_dir / "study.db").is_file() and not cfg.search.storage:
        raise ConfigError(f"study {cfg.name!r} has not been run yet (no {cfg.study_dir / 'study.db'}); "
                          f"run `autokd search {cfg.source}` first")
    try:
        return optuna.load_study(study_name=cfg.name, storage=make_storage(cfg.storage_url))
    except KeyError:
        raise ConfigError(f"study {cfg.name!r} not found in {cfg.storage_url}") from None
