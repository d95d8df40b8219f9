"""Pruners selectable by name (``search.pruner``): stop hopeless trials by their intermediate accuracy."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["PRUNERS", "create", "names"]

PRUNERS: Registry = Registry("pruner")


def _none(epochs, **kw):
    import optuna

    return optuna.pruners.NopPruner()


def _median(epochs, **kw):
    import optuna

    from .completed_once import CompletedOncePerTrial

    kw.setdefault("n_startup_trials", 4)
    kw.setdefault("n_warmup_steps", max(1, epochs // 3))
    return CompletedOncePerTrial(optuna.pruners.MedianPruner(**kw))


def _sha(epochs, **kw):
    import optuna

    kw.setdefault("min_resource", max(1, epochs // 8))
    return optuna.pruners.SuccessiveHalvingPruner(**kw)


def _hyperband(epochs, **kw):
    import optuna

    kw.setdefault("min_resource", 1)
    kw.setdefault("max_resource", epochs)
    return optuna.pruners.HyperbandPruner(**kw)


PRUNERS.add("none", _none, description="never prune")
PRUNERS.add("median", _median, description="prune below the median of earlier trials at the same epoch")
PRUNERS.add("sha", _sha, description="asynchronous successive halving")
PRUNERS.add("hyperband", _hyperband, description="Hyperband over successive-halving brackets")


def create(name: str, epochs: int, **kwargs: Any):
    factory = PRUNERS.get(name, where="search.pruner")
    try:
        return factory(epochs, **kwargs)
    except TypeError as e:
        raise ConfigError(f"search.pruner_kwargs: invalid for pruner {name!r}: {e}") from None


def names() -> list[str]:
    return PRUNERS.names()
