"""What autokd's tree samplers share (:mod:`..mcts`, :mod:`..evolution`): the base class (:mod:`.base`), the
decision tree and trial records read from a study (:mod:`.records`), the records kept up to date as trials
finish (:mod:`.ledger`) with MCTS's statistics on top (:mod:`.tree_stats`), numeric ranges on [0, 1]
(:mod:`.distributions`) and the Parzen estimator of numeric leaves (:mod:`.parzen`)."""

from __future__ import annotations

from .base import TreeSamplerBase

__all__ = ["TreeSamplerBase"]
