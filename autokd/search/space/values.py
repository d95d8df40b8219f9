"""The building blocks of the space-file schema: values (fixed, choice, range) and strict file models.

A value is read into a :mod:`autokd.search.params` object: ``3`` or ``"sgd"`` -> :class:`Fixed`; ``[a, b]``
or ``{choices: [a, b]}`` -> :class:`Choice` (a single choice is Fixed); ``{low, high, log?, int?, step?}``
-> :class:`Range` (``low == high`` is Fixed). Numbers must be finite. Mistakes are refused with
:func:`autokd.files.invalid`, so the one-line message names the place in the file (``ce_weight.low: ...``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, TypeAdapter, model_validator

from ...errors import AutoKDError
from ...files import invalid
from ...hparams import HParam
from ..params import Choice, Fixed, Param, Range

__all__ = ["FileModel", "Number", "Value", "ValueInput", "by_shape", "default_param", "finite_number", "located",
           "param_values", "to_param"]


class FileModel(BaseModel):
    """A mapping of a space file: unknown keys are refused with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = sorted(f.alias or k for k, f in cls.model_fields.items())
            for key in data:
                if key not in allowed:
                    invalid(f"unknown field; allowed: {', '.join(allowed)}", key)
        return data


@contextmanager
def located(*at: str | int) -> Iterator[None]:
    """Turn a :class:`ConfigError` raised by a check (``HParam.check``, a registry lookup) into a
    validation error at ``at`` below the validated field."""
    try:
        yield
    except AutoKDError as e:
        invalid(str(e), *at)


# ------------------------------------------------------------------------------------------------ numbers
def finite_number(v: Any, *at: str | int) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        invalid(f"must be a number, got {v!r}", *at)
    if not math.isfinite(v):
        invalid(f"must be a finite number, got {v!r}", *at)
    return v


#: A finite number, kept as written (an int stays an int).
Number = Annotated[float, PlainValidator(finite_number, json_schema_input_type=float)]
Scalar = Union[None, bool, int, float, str]


def _scalar(v: Any, *at: str | int) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            invalid(f"must be a finite number, got {v!r}", *at)
        return v
    invalid(f"expected a number, a string or a boolean, got {v!r}", *at)


# ------------------------------------------------------------------------------------------------ values
class ChoicesSpec(FileModel):
    """``{choices: [a, b, ...]}``: one of these values."""

    choices: Annotated[list[Any], PlainValidator(
        lambda v: v if isinstance(v, list) else invalid(f"expected a list of values, got {v!r}"),
        json_schema_input_type=list[Scalar])]


class RangeSpec(FileModel):
    """``{low, high, log?, int?, step?}``: a number in [low, high]."""

    low: Number
    high: Number
    log: StrictBool = Field(False, description="sample on a log scale (needs low > 0)")
    int_: StrictBool = Field(False, alias="int", description="integers only")
    step: Number | None = Field(None, description="a grid step (not with log)")


#: What a value may look like in a file (documentation of :data:`Value` for the JSON Schema).
ValueInput = Union[Scalar, list[Scalar], ChoicesSpec, RangeSpec]


def _choice(items: list[Any], *at: str | int) -> Param:
    if not items:
        invalid("empty choice list; give at least one value", *at)
    values = tuple(_scalar(v, *at, i) for i, v in enumerate(items))
    return Choice(values) if len(values) > 1 else Fixed(values[0])


def to_param(spec: Any) -> Param:
    """A value of a space file as a :class:`Param` (a ``Param`` given in code passes through)."""
    if isinstance(spec, Param):
        return spec
    if isinstance(spec, list):
        return _choice(spec)
    if isinstance(spec, dict):
        if "choices" in spec:
            spec = ChoicesSpec.model_validate(spec)
            return _choice(spec.choices, "choices")
        if not {"low", "high"} <= set(spec):
            invalid(f"a range needs low and high (optional: log, int, step); got keys {sorted(spec)}")
        r = RangeSpec.model_validate(spec)
        if r.low > r.high:
            invalid(f"inverted range, low {r.low} > high {r.high}")
        if r.log and r.low <= 0:
            invalid(f"a log range needs low > 0, got low {r.low}")
        if r.step is not None and (r.log or r.step <= 0):
            invalid("step must be > 0 and cannot be combined with log", "step")
        if r.low == r.high:
            return Fixed(int(r.low) if r.int_ else r.low)
        return Range(float(r.low), float(r.high), log=r.log, integer=r.int_, step=r.step)
    return Fixed(_scalar(spec))


#: A value of a space file, read into a :class:`Param`; the JSON Schema documents the YAML forms.
Value = Annotated[Param, PlainValidator(to_param, json_schema_input_type=ValueInput)]


def param_values(p: Param) -> tuple[Any, ...]:
    """The values to check of a parameter: a fixed value, every choice, or both bounds of a range."""
    if isinstance(p, Fixed):
        return (p.value,)
    if isinstance(p, Choice):
        return p.choices
    assert isinstance(p, Range)
    return (p.low, p.high)


def default_param(h: HParam) -> Param:
    """A declared hyper-parameter's default search range (its default when it has none)."""
    return to_param(h.search_spec()) if h.searchable else Fixed(h.default)


# ------------------------------------------------------------------------------------------------ shapes
_SHAPES: dict[str, Callable[[Any], bool]] = {
    "none": lambda v: v is None,
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}
_WORDS = {"none": "nothing", "str": "a name", "list": "a list", "dict": "a mapping"}


def by_shape(expected: str | None = None, **branches: Any) -> PlainValidator:
    """A field that takes one of several YAML shapes (keyword ``none``, ``str``, ``list`` or ``dict``: the
    type for that shape). The input's shape picks the one branch that validates it, so a mistake is
    reported once, in that branch's terms (a plain union would report every branch). ``expected`` words
    the refusal of any other shape."""
    adapters: dict[str, TypeAdapter] = {}
    words = [_WORDS[s] for s in branches]
    expected = expected or (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])

    def validate(v: Any) -> Any:
        shape = next((s for s in branches if _SHAPES[s](v)), None)
        if shape is None:
            invalid(f"expected {expected}, got {v!r}")
        if shape not in adapters:
            adapters[shape] = TypeAdapter(branches[shape])
        return adapters[shape].validate_python(v)

    return PlainValidator(validate, json_schema_input_type=Union[tuple(branches.values())])
