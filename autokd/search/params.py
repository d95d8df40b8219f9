"""Parameter specifications of a search space: fixed values, categorical choices and numeric ranges."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Param", "Fixed", "Choice", "Range", "parse_param"]

_RANGE_KEYS = {"low", "high", "log", "int", "step"}


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


def parse_param(spec: Any, where: str) -> Param:
    """``3`` -> Fixed; ``[a, b]`` or ``{choices: [...]}`` -> Choice; ``{low, high, log?, int?, step?}`` -> Range."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: empty choice list; give at least one value")
        for v in spec:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise ConfigError(f"{where}: choices must be numbers, strings or booleans, got {v!r}")
        return Choice(tuple(spec)) if len(spec) > 1 else Fixed(spec[0])
    if isinstance(spec, dict):
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise ConfigError(f"{where}: a choice takes only 'choices', got {sorted(spec)}")
            return parse_param(list(spec["choices"]) if isinstance(spec["choices"], list) else [], where)
        unknown = set(spec) - _RANGE_KEYS
        if unknown or not {"low", "high"} <= set(spec):
            raise ConfigError(
                f"{where}: a range needs low and high (optional: log, int, step); got keys {sorted(spec)}"
            )
        low, high = spec["low"], spec["high"]
        for k, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}.{k}: must be a number, got {v!r}")
        if low > high:
            raise ConfigError(f"{where}: inverted range, low {low} > high {high}")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got low {low}")
        integer = bool(spec.get("int", False))
        step = spec.get("step")
        if step is not None and log:
            raise ConfigError(f"{where}: step cannot be combined with log")
        if low == high:
            return Fixed(int(low) if integer else low)
        return Range(float(low), float(high), log=log, integer=integer, step=step)
    if spec is None or isinstance(spec, (bool, int, float, str)):
        return Fixed(spec)
    raise ConfigError(f"{where}: cannot read {spec!r} as a value, a choice list or a range")
