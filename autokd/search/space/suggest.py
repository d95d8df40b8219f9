"""Trials -> recipes, derived from the decision tree alone.

:func:`suggest_params` asks an Optuna trial for every decision the trial reaches (a categorical's children
only under its chosen value) and returns the flat ``{name: value}`` of all of them, fixed ones included.
:func:`recipe_from_params` turns such values (or a stored trial's ``params``: fixed ones may be left out)
into the :class:`~autokd.recipe.Recipe`: each reached decision's value goes where its
:class:`~autokd.search.tree.Into` says. Nothing here knows the shape of a space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ...recipe import Recipe
from ..params import Choice
from ..tree import Decision, reach

__all__ = ["suggest_params", "recipe_from_params"]


def suggest_params(tree: list[Decision], trial) -> dict[str, Any]:
    """Ask ``trial`` (``suggest_categorical/int/float`` through each decision's parameter) for every
    reachable searched decision, in tree order; the values of every reached decision."""
    return {d.name: value for d, value in reach(tree, lambda d: d.param.suggest(trial, d.name))}


def _put(recipe: dict[str, Any], d: Decision, value: Any) -> None:
    assert d.into is not None
    if d.into.rename is not None:
        value = d.into.rename[value]
    *path, last = d.into.path
    node = recipe
    for key in path:
        node = node.setdefault(key, {})
    if d.into.gather:
        node.setdefault(last, set()).add(value)
    else:
        node[last] = value


def _sorted_sets(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _sorted_sets(v) for k, v in node.items()}
    return sorted(node) if isinstance(node, set) else node


def recipe_from_params(tree: list[Decision], params: Mapping[str, Any], source: str = "<space>") -> Recipe:
    """The recipe that ``params`` (a value per reached searched decision) make in the space of ``tree``."""

    def stored(d: Decision) -> Any:
        if d.name not in params:
            raise ConfigError(f"{source}: no value for parameter {d.name!r}")
        value = params[d.name]
        if isinstance(d.param, Choice) and value not in d.param.choices:
            raise ConfigError(f"{source}: {d.name}: {value!r} is not one of {list(d.param.choices)}")
        return value

    recipe: dict[str, Any] = {"student": {"kwargs": {}}, "terms": {}, "scheme": {"params": {}}, "optim": {}}
    for d, value in reach(tree, stored):
        if d.into is not None:
            _put(recipe, d, value)
    recipe = _sorted_sets(recipe)
    recipe["terms"] = [recipe["terms"][i] for i in sorted(recipe["terms"])]
    return Recipe.model_validate(recipe)

