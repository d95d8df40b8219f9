"""The decision tree of a search space: ordered decisions, each choice with its conditional children.

Tree-search and evolutionary samplers walk and mutate it; ``autokd space show`` prints it. A :class:`Decision`
is one Optuna parameter (``name`` is its stable parameter name). Categorical decisions carry, per choice,
the decisions that exist only when that choice is made; numeric decisions are leaves. A decision with a
:class:`Fixed` parameter asks nothing: it stands for a value the recipe gets anyway (``Fixed(Shared(name))``:
the value chosen for the earlier decision ``name``, e.g. one temperature shared by every term).

Each decision also says where its value goes in a recipe (:class:`Into`; samplers ignore it), so
:func:`reach` plus that address is all it takes to turn a trial into a recipe (``autokd.search.space``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .params import Choice, Fixed, Param, Range

__all__ = ["Decision", "Into", "Shared", "count_configurations", "reach", "render_tree", "walk"]


@dataclass(frozen=True)
class Into:
    """Where a decision's value goes in the recipe built from a trial.

    ``path`` is a chain of keys into the recipe's fields (``("terms", 0, "params", "temperature")``);
    ``rename`` maps the chosen value to what is written there (a student label to its model name);
    ``gather`` collects every value written at ``path`` into a sorted set (searched layer depths).
    """

    path: tuple[str | int, ...]
    rename: Mapping[Any, Any] | None = None
    gather: bool = False


@dataclass(frozen=True)
class Shared:
    """The value of a ``Fixed`` decision that repeats the value chosen for the earlier decision ``name``."""

    name: str


@dataclass
class Decision:
    name: str
    param: Param
    children: dict[Any, list[Decision]] = field(default_factory=dict)  # choice -> conditional decisions
    into: Into | None = None  # where the value goes in a recipe; None: it only selects children

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


def reach(decisions: list[Decision], answer: Callable[[Decision], Any]) -> list[tuple[Decision, Any]]:
    """The decisions one trial passes through, in suggestion order, each with its value.

    ``answer(decision)`` gives the value of every searched decision (ask a trial, or read stored
    parameters); a fixed one has its own value (a :class:`Shared` one the value already chosen for the
    decision it names). A decision's children are visited only under its value.
    """
    out: list[tuple[Decision, Any]] = []
    chosen: dict[str, Any] = {}

    def visit(ds: list[Decision]) -> None:
        for d in ds:
            if isinstance(d.param, Fixed):
                value = d.param.value
                if isinstance(value, Shared):
                    value = chosen[value.name]
            else:
                value = answer(d)
            chosen[d.name] = value
            out.append((d, value))
            if d.children:
                visit(d.children.get(value, []))

    visit(decisions)
    return out


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
