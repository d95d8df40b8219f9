"""What autokd's tree samplers share (:mod:`..mcts`, :mod:`..evolution`): the base class (:mod:`.base`), the
decision tree and trial records read from a study (:mod:`.records`), numeric ranges on [0, 1]
(:mod:`.distributions`) and the Parzen estimator of numeric leaves (:mod:`.parzen`)."""

from __future__ import annotations

from .base import TreeSamplerBase

__all__ = ["TreeSamplerBase"]
