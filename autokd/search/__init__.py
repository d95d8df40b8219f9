"""Search: spaces (YAML -> decision tree -> define-by-run suggest), objective, samplers, pruners, backends.

Optuna is imported only when a study runs, not on ``import autokd.search``.
"""

from __future__ import annotations

from .space import SearchSpace
from .tree import Decision, count_configurations

__all__ = ["SearchSpace", "Decision", "count_configurations"]
