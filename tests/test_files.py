"""One-line validation messages: pydantic's location, plus the place below it that ``files.invalid`` names."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from autokd.files import format_validation_error, invalid


class _Term(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, float] = {}
    weight: float = 1.0

    @field_validator("params")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        for k in v:
            if k != "temperature":
                invalid(f"no hyper-parameter {k!r}", k)
        return v


class _File(BaseModel):
    terms: list[_Term]


def _message(data) -> str:
    with pytest.raises(ValidationError) as e:
        _File.model_validate(data)
    return format_validation_error(e.value)


def test_invalid_names_the_place_below_the_validated_field():
    assert _message({"terms": [{}, {"params": {"temp": 3}}]}) == "terms.1.params.temp: no hyper-parameter 'temp'"


def test_messages_keep_braces_and_plain_errors_read_as_before():
    with pytest.raises(ValidationError) as e:
        _Term.model_validate({"params": {"{x}": 1}})
    assert format_validation_error(e.value) == "params.{x}: no hyper-parameter '{x}'"
    assert _message({"terms": [{"weight": "heavy"}]}) == \
        "terms.0.weight: Input should be a valid number, unable to parse string as a number"
    assert _message({"terms": [{"colour": 1}]}) == "terms.0.colour: unknown field"
    assert _message({"terms": [{"weight": "x", "colour": 1}]}).endswith("(+1 more)")
