"""Optuna distributions as the tree samplers see them: numeric ranges mapped onto [0, 1] (log-transformed
for log ranges, widened by half a step at each end so every grid value owns an equal share), uniform draws
and membership."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

__all__ = ["bounds", "contains", "from_unit", "to_unit", "uniform"]

Numeric = FloatDistribution | IntDistribution


def bounds(dist: Numeric) -> tuple[float, float, bool]:
    """The continuous interval a numeric distribution is modelled on, and whether it is on a log scale.

    Stepped ranges (every ``IntDistribution``, a ``FloatDistribution`` with ``step``) reach half a step
    beyond ``low`` and ``high``.
    """
    half = 0.0
    if isinstance(dist, IntDistribution):
        half = 0.5 * dist.step
    elif dist.step is not None:
        half = 0.5 * dist.step
    low, high = dist.low - half, dist.high + half
    if dist.log:
        return math.log(low), math.log(high), True
    return low, high, False


def to_unit(dist: Numeric, value: float) -> float | None:
    """``value`` mapped onto [0, 1] (``None`` when outside ``dist``; 0.5 for a single-point range)."""
    if not (dist.low <= value <= dist.high):
        return None
    lo, hi, log = bounds(dist)
    if hi <= lo:
        return 0.5
    x = math.log(value) if log else float(value)
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def from_unit(dist: Numeric, u: float) -> Any:
    """The value of ``dist`` at ``u`` in [0, 1] (clipped): rounded to the grid of stepped ranges, a Python
    ``int`` for integer distributions and a Python ``float`` otherwise, always within [low, high]."""
    lo, hi, log = bounds(dist)
    x = lo + min(1.0, max(0.0, float(u))) * (hi - lo)
    v = math.exp(x) if log else x
    if isinstance(dist, IntDistribution):
        k = round((v - dist.low) / dist.step)
        return int(min(dist.high, max(dist.low, dist.low + k * dist.step)))
    if dist.step is not None:
        k = round((v - dist.low) / dist.step)
        v = dist.low + k * dist.step
    return float(min(dist.high, max(dist.low, v)))


def uniform(dist: BaseDistribution, rng: np.random.RandomState) -> Any:
    """A uniform draw (log-uniform for log ranges) from an Optuna distribution."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.randint(len(dist.choices)))]
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return from_unit(dist, rng.uniform(0.0, 1.0))
    raise ValueError(f"unsupported distribution {dist!r}")


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a valid value of ``dist`` (a stored value may predate a changed range)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False
