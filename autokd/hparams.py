"""Declared hyper-parameters of components (losses, schemes): defaults, search ranges, validity.

The ONE place where a hyper-parameter value is checked: :meth:`HParam.check` (one value) and
:func:`resolve` (a component's given values against its declarations, defaults filled in). Losses,
schemes and search spaces all call these, so a value refused in a recipe is refused in a space too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, close_matches

__all__ = ["HParam", "resolve", "Interval"]

_KINDS = ("float", "int", "categorical", "bool")
_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+|inf)\s*([\])])\s*$")


@dataclass(frozen=True)
class Interval:
    """A validity interval: ``low``/``high`` with open or closed ends (``None`` = unbounded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Interval:
        """``"(0, inf)"``, ``"[0, 1]"``, ``"[0, 1)"``, ``"> 0"``, ``">= 0"``, ``"< 1"``, ``"<= 1"``."""
        t = text.strip()
        for op, kw in ((">=", {"low_open": False}), (">", {"low_open": True}),
                       ("<=", {"high_open": False}), ("<", {"high_open": True})):
            if t.startswith(op):
                v = float(t[len(op):])
                return cls(low=v, **kw) if op[0] == ">" else cls(high=v, **kw)
        m = _INTERVAL.match(t)
        if not m:
            raise ValueError(f"cannot read {text!r} as an interval such as '(0, inf)' or '>= 0'")
        lo, hi = float(m.group(2)), float(m.group(3))
        return cls(low=None if math.isinf(lo) else lo, high=None if math.isinf(hi) else hi,
                   low_open=m.group(1) == "(", high_open=m.group(4) == ")")

    def __contains__(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        return not (self.high is not None and (v > self.high or (self.high_open and v == self.high)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "any finite number"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class HParam:
    """A declared hyper-parameter: its default, its default search range and what values are valid.

    ``kind`` is ``float`` | ``int`` | ``categorical`` | ``bool``. ``low``/``high`` (numbers) are the default
    *search range*; ranges spanning orders of magnitude use ``log=True``. ``valid`` is the interval of
    acceptable values (e.g. ``"> 0"``, ``"[0, 1)"``); when omitted it is inferred from the search range's
    lower end: ``low > 0`` means values must be > 0, ``low == 0`` means >= 0 (a temperature or a weight can
    never be negative). Numbers must always be finite. Categorical parameters with ``choices`` accept
    those values only; without ``choices`` any value (e.g. a model name, a mapping of kwargs).
    """

    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    kind: str = "float"
    doc: str = ""
    valid: str | None = None
    interval: Interval = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"HParam.kind must be float|int|categorical|bool, got {self.kind!r}")
        numeric = self.kind in ("float", "int")
        if numeric and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"HParam needs low <= high, got {self.low}, {self.high}")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError("a log-scale HParam needs low > 0")
        if self.valid is not None:
            interval = Interval.parse(self.valid)
        elif numeric:
            interval = Interval(low=0.0, low_open=self.low > 0) if self.low >= 0 else Interval()
        else:
            interval = Interval()
        object.__setattr__(self, "interval", interval)
        if numeric and self.default is not None and self.default not in interval:
            raise ValueError(f"HParam default {self.default!r} is not {interval}")

    def search_spec(self) -> dict[str, Any]:
        """The default range in search-space syntax."""
        if self.kind == "categorical":
            return {"choices": list(self.choices or ())}
        if self.kind == "bool":
            return {"choices": [False, True]}
        spec: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.kind == "int":
            spec["int"] = True
        return spec

    @property
    def searchable(self) -> bool:
        """Whether a default search range exists (numbers, booleans, categoricals with choices)."""
        return self.kind != "categorical" or bool(self.choices)

    def check(self, value: Any, where: str) -> Any:
        """``value`` coerced to this parameter's kind, or a one-line :class:`ConfigError` naming ``where``."""
        if self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value!r}")
            if self.kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ConfigError(f"{where} must be an integer, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            if value not in self.interval:
                raise ConfigError(f"{where} must be {self.interval}, got {value!r}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
            return value
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value


def resolve(declared: Mapping[str, HParam], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Every declared parameter's value: the given ones checked, the others at their defaults.

    ``owner`` names the component in messages, e.g. ``"loss 'kd'"`` or ``"scheme 'dot'"``.
    """
    unknown = [k for k in given if k not in declared]
    if unknown:
        k = unknown[0]
        hint = close_matches(k, declared)
        allowed = ", ".join(sorted(declared)) or "none"
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{owner} has no hyper-parameter {k!r}{did}; allowed: {allowed}")
    out = {k: h.default for k, h in declared.items()}
    for k, v in given.items():
        out[k] = declared[k].check(v, f"{owner}: {k}")
    return out
