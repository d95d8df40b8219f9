"""Parameter specifications of a search space: fixed values, categorical choices and numeric ranges.

Space files are read into these by ``autokd.search.space.values``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "Fixed", "Choice", "Range"]


class Param:
    """A leaf of the search space."""

    def suggest(self, trial, name: str) -> Any:
        raise NotImplementedError

    def midpoint(self) -> Any:
        """A representative value (used for baselines): geometric mid for log ranges, first choice."""
        raise NotImplementedError

    @property
    def searched(self) -> bool:
        return True


@dataclass(frozen=True)
class Fixed(Param):
    value: Any

    def suggest(self, trial, name: str) -> Any:
        return self.value

    def midpoint(self) -> Any:
        return self.value

    @property
    def searched(self) -> bool:
        return False

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Choice(Param):
    choices: tuple[Any, ...]

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def midpoint(self) -> Any:
        return self.choices[0]

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.choices)) + "}"


@dataclass(frozen=True)
class Range(Param):
    low: float
    high: float
    log: bool = False
    integer: bool = False
    step: float | None = None

    def suggest(self, trial, name: str) -> Any:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def midpoint(self) -> Any:
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return int(round(mid)) if self.integer else float(mid)

    def __str__(self) -> str:
        kind = "int" if self.integer else "float"
        return f"{kind}[{self.low:g}, {self.high:g}{', log' if self.log else ''}]"

