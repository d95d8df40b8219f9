"""Samplers selectable by name in a study (``search.sampler``). Optuna is imported on use, not at import."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...registry import Registry

__all__ = ["SAMPLERS", "create", "names"]

SAMPLERS: Registry = Registry("sampler")


def _random(seed, **kw):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed, **kw)


def _tpe(seed, **kw):
    import optuna

    kw.setdefault("n_startup_trials", 8)
    return optuna.samplers.TPESampler(seed=seed, **kw)


def _cmaes(seed, **kw):
    import optuna

    kw.setdefault("warn_independent_sampling", False)
    kw.setdefault("independent_sampler", optuna.samplers.RandomSampler(seed=seed))
    return optuna.samplers.CmaEsSampler(seed=seed, **kw)


def _nsga2(seed, **kw):
    import optuna

    kw.setdefault("population_size", 8)
    return optuna.samplers.NSGAIISampler(seed=seed, **kw)


SAMPLERS.add("random", _random, description="uniform random search (Optuna RandomSampler)")
SAMPLERS.add("tpe", _tpe, description="Tree-structured Parzen Estimator (Optuna TPESampler)")
SAMPLERS.add("cmaes", _cmaes, description="CMA-ES on numeric parameters, random on categorical (Optuna)")
SAMPLERS.add("nsga2", _nsga2, multi_objective=True,
             description="NSGA-II, multi-objective: validation accuracy vs parameter count (Optuna)")


def create(name: str, seed: int | None = None, **kwargs: Any):
    factory = SAMPLERS.get(name, where="search.sampler")
    try:
        return factory(seed, **kwargs)
    except TypeError as e:
        raise ConfigError(f"search.sampler_kwargs: invalid for sampler {name!r}: {e}") from None


def names() -> list[str]:
    return SAMPLERS.names()


def is_multi_objective(name: str) -> bool:
    return bool(SAMPLERS.meta(name).get("multi_objective"))


# ---- tree-structured samplers (mcts.py, evolution.py); optuna is imported when one is created ----
def _mcts(seed, **kw):
    from .mcts import MCTSSampler

    try:
        return MCTSSampler(seed=seed, **kw)
    except ConfigError:
        raise
    except ValueError as e:  # a bad value in search.sampler_kwargs: the user's mistake, a clean message
        raise ConfigError(f"search.sampler_kwargs: {e}") from None


def _evolution(seed, **kw):
    from .evolution import EvolutionSampler

    try:
        return EvolutionSampler(seed=seed, **kw)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"search.sampler_kwargs: {e}") from None


SAMPLERS.add("mcts", _mcts, uses_space=True,
             description="Monte Carlo tree search (UCT) over the categorical decisions, Parzen leaves (Auto-KD)")
SAMPLERS.add("evolution", _evolution, uses_space=True,
             description="tournament evolution over the decision tree; diverged losses rejected (KD-Zero)")

__all__ += ["MCTSSampler", "EvolutionSampler"]


def __getattr__(name: str):
    if name == "MCTSSampler":
        from .mcts import MCTSSampler

        return MCTSSampler
    if name == "EvolutionSampler":
        from .evolution import EvolutionSampler

        return EvolutionSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
