"""The decision tree of a search space: ordered decisions, each choice with its conditional children.

Tree-search and evolutionary samplers walk and mutate it; ``autokd space show`` prints it. A :class:`Decision`
is one Optuna parameter (``name`` is its stable parameter name). Categorical decisions carry, per choice,
the decisions that exist only when that choice is made; numeric decisions are leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .params import Choice, Fixed, Param, Range

__all__ = ["Decision", "count_configurations", "render_tree", "walk"]


@dataclass
class Decision:
    name: str
    param: Param
    children: dict[Any, list[Decision]] = field(default_factory=dict)  # choice -> conditional decisions

    @property
    def kind(self) -> str:
        if isinstance(self.param, Choice):
            return "categorical"
        if isinstance(self.param, Range):
            return "int" if self.param.integer else "float"
        return "fixed"

    @property
    def choices(self) -> tuple[Any, ...]:
        return self.param.choices if isinstance(self.param, Choice) else ()

    def count(self) -> int:
        """Distinct discrete configurations under this decision (a float range counts as one)."""
        if isinstance(self.param, Choice):
            return sum(count_configurations(self.children.get(c, [])) for c in self.param.choices)
        if isinstance(self.param, Range) and self.param.integer:
            step = 1 if self.param.log else int(self.param.step or 1)
            values = range(int(self.param.low), int(self.param.high) + 1, step)
            return sum(count_configurations(self.children.get(v, [])) for v in values)
        if isinstance(self.param, Fixed):
            return count_configurations(self.children.get(self.param.value, [])) if self.children else 1
        return 1


def count_configurations(decisions: list[Decision]) -> int:
    return math.prod(d.count() for d in decisions) if decisions else 1


def walk(decisions: list[Decision]):
    """Every decision of the tree, depth first (conditional ones included)."""
    for d in decisions:
        yield d
        for kids in d.children.values():
            yield from walk(kids)


def render_tree(decisions: list[Decision], indent: str = "") -> list[str]:
    lines: list[str] = []
    for d in decisions:
        if isinstance(d.param, Fixed):  # not a decision, but what it implies may be
            if d.children:
                lines += render_tree(d.children.get(d.param.value, []), indent)
            continue
        lines.append(f"{indent}{d.name}: {d.param}")
        for choice, kids in d.children.items():
            sub = render_tree(kids, indent + "    ")
            if sub:
                lines.append(f"{indent}  if {d.name} = {choice}:")
                lines += sub
    return lines
