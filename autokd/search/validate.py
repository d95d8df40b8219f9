"""Everything about a study that can be wrong is checked here, before anything trains, and a study records
the fingerprint of what defines it (teacher, data, space) so that a changed study is never silently resumed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..files import temp_path
from ..fingerprint import config_hash
from . import trial_record as tr

if TYPE_CHECKING:
    from ..config import StudyConfig
    from .space import SearchSpace

__all__ = ["validate_study", "study_fingerprint", "check_fingerprint"]


def validate_study(cfg: StudyConfig, space: SearchSpace) -> None:
    """Storage URL and driver, sampler and pruner with their kwargs, proxies, teacher checkpoint, and that
    the study folder is writable — one-line ConfigErrors, before any data is loaded or any model trains."""
    from .. import proxies
    from .backends.optuna_backend import make_pruner, make_sampler
    from .backends.storage import check_storage_url

    check_storage_url(cfg.storage_url)
    try:
        make_sampler(cfg, space)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"search.sampler_kwargs: invalid for sampler {cfg.search.sampler!r}: {e}") from None
    try:
        make_pruner(cfg, cfg.search.fidelity.epochs or cfg.search.epochs or space.default_optim().epochs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"search.pruner_kwargs: invalid for pruner {cfg.search.pruner!r}: {e}") from None
    if cfg.search.prescreen is not None:
        proxies.PROXIES.canonical(cfg.search.prescreen.proxy, where="search.prescreen.proxy")
    if cfg.search.mode == "diswot":
        proxies.PROXIES.canonical(cfg.search.diswot.proxy, where="search.diswot.proxy")
    if cfg.search.backend == "ray":
        from .backends.ray_backend import check_ray

        check_ray(cfg)
    if cfg.teacher.checkpoint and not Path(cfg.teacher.checkpoint).is_file():
        raise ConfigError(f"teacher.checkpoint: file not found: {cfg.teacher.checkpoint}")
    _check_writable(cfg.study_dir)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {folder} is not writable ({e.strerror or e})") from None


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def study_fingerprint(cfg: StudyConfig, space: SearchSpace) -> dict[str, str]:
    """Hashes of what defines the study's trials: the teacher (its checkpoint's bytes, or its training
    config), the data (dataset, split seed and fractions, options) and the search space (its content)."""
    teacher = (_file_digest(Path(cfg.teacher.checkpoint)) if cfg.teacher.checkpoint
               else config_hash(cfg.teacher.model_dump(mode="json")))
    return {"teacher": teacher, "data": config_hash(cfg.data.model_dump(mode="json")),
            "space": config_hash(space.raw)}


def check_fingerprint(study, cfg: StudyConfig, space: SearchSpace, *, allow_changed: bool = False) -> str:
    """Record the study's fingerprint on its first run; on a resume, stop with one line naming what changed
    unless ``allow_changed`` (then the change is recorded in ``fingerprint_history``). Returns the short
    fingerprint every trial of this run records."""
    parts = study_fingerprint(cfg, space)
    short = config_hash(parts)
    stored = study.user_attrs.get(tr.StudyKey.FINGERPRINT.value)
    if stored is None:
        study.set_user_attr(tr.StudyKey.FINGERPRINT.value, {"id": short, **parts})
        return short
    if stored.get("id") == short:
        return short
    changed = [k for k in parts if stored.get(k) != parts[k]]
    if not allow_changed:
        raise ConfigError(
            f"study {cfg.name!r} in {cfg.storage_url} was run with a different {', '.join(changed)}; "
            f"give the study a new name, or rerun with --allow-changed to continue it (the change is recorded "
            f"and the report separates trials by fingerprint)")
    history = list(study.user_attrs.get(tr.StudyKey.FINGERPRINT_HISTORY.value) or [])
    history.append({"from": stored, "to": {"id": short, **parts}, "changed": changed, "pid": os.getpid()})
    study.set_user_attr(tr.StudyKey.FINGERPRINT_HISTORY.value, history)
    study.set_user_attr(tr.StudyKey.FINGERPRINT.value, {"id": short, **parts})
    return short
