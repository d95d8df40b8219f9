"""A :class:`Recipe` says everything about one way to distil: student, distillation terms, scheme, optimiser.

Recipes are pure data: pydantic models that round-trip through YAML (with a schema version) and carry
their provenance (study, trial, metrics, seed, autokd version). They check their own structure (types,
finite non-negative weights, the form of layer pairs) and build nothing: component names and
hyper-parameters are checked against the registries by ``autokd.train.check_recipe`` (which also fills
in defaults), and ``autokd.Distiller.from_recipe`` builds the terms.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ._version import __version__
from .errors import ConfigError
from .files import atomic_write_text, format_validation_error, load_yaml

__all__ = ["Recipe", "StudentSpec", "InitSpec", "QuantizeSpec", "TermSpec", "SchemeSpec", "OptimSpec", "Provenance",
           "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class InitSpec(_Strict):
    """How the student's weights start (default: the family's random initialisation): an initialiser ``name``
    (e.g. ``net2net``) and its parameters. A bare string is short for ``{name: <string>}``."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_values(v, "params")


class QuantizeSpec(_Strict):
    """Train the student fake-quantized: ``bits``-bit weights and layer inputs (quantization-aware training)."""

    bits: int = Field(8, ge=1)


class StudentSpec(_Strict):
    """A model from the zoo: ``name`` plus keyword arguments of its factory (e.g. depth, width); optionally how
    its weights start (``init``) and whether it trains fake-quantized (``quantize``). Absent options are left out
    of the YAML, so recipes without them read and hash as before."""

    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    init: InitSpec | None = None
    quantize: QuantizeSpec | None = None

    @field_validator("kwargs")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_values(v, "kwargs")

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler) -> dict[str, Any]:
        out = handler(self)
        for key in ("init", "quantize"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    def label(self) -> str:
        out = self.name
        if self.kwargs:
            out += "(" + ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items())) + ")"
        if self.init is not None:
            out += f"+{self.init.name}"
        if self.quantize is not None:
            out += f"+int{self.quantize.bits}"
        return out


class TermSpec(_Strict):
    """One distillation term: ``weight × loss(student, teacher)``."""

    loss: str = Field(min_length=1)
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    params: dict[str, Any] = Field(default_factory=dict)
    pairs: list[tuple[int, int]] | Literal["auto"] | dict[str, list[float]] | None = None

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_values(v, "params")

    @model_validator(mode="after")
    def _check(self) -> TermSpec:
        if isinstance(self.pairs, list) and any(t < 0 or s < 0 for t, s in self.pairs):
            raise ValueError("terms[].pairs: stage indices must be >= 0")
        if isinstance(self.pairs, dict):
            depths = self.pairs.get("depths")
            if set(self.pairs) != {"depths"} or not depths or any(not 0 < d <= 1 for d in depths):
                raise ValueError("terms[].pairs: a mapping must be {depths: [relative depths in (0, 1]]}")
        return self


class SchemeSpec(_Strict):
    name: str = Field("standard", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_values(v, "params")


class OptimSpec(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, allow_inf_nan=False)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    gamma: float = Field(0.1, gt=0, allow_inf_nan=False)
    warmup_epochs: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(15, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on a CUDA device that supports it, else fp32 (always fp32 on "
        "the CPU); losses are computed in fp32; fp16 adds loss scaling")
    compile: bool = Field(False, description="torch.compile the student's forward (opt-in)")


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    autokd_version: str = __version__
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    study: str | None = None
    trial: int | None = None
    seed: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    teacher: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class Recipe(_Strict):
    """Everything about one way to distil a teacher into a student."""

    schema_version: int = SCHEMA_VERSION
    student: StudentSpec
    ce_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    terms: list[TermSpec] = Field(default_factory=list)
    scheme: SchemeSpec = Field(default_factory=SchemeSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    seed: int = 0
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is not supported (this autokd reads {SCHEMA_VERSION})")
        return v

    # ---- convenience -------------------------------------------------------------------------
    @property
    def uses_teacher(self) -> bool:
        return bool(self.terms)

    def describe(self) -> str:
        parts = [f"{self.ce_weight:.3g}·CE"] if self.ce_weight else []
        for t in self.terms:
            hp = ",".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
            parts.append(f"{t.weight:.3g}·{t.loss}({hp})")
        return f"{self.student.label()}: " + (" + ".join(parts) or "nothing") + f" [{self.scheme.name}]"

    def with_seed(self, seed: int) -> Recipe:
        r = self.model_copy(deep=True)
        r.seed = seed
        return r

    # ---- YAML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        # libyaml's emitter when PyYAML has it: the same text as yaml.safe_dump (tested), ~4x faster (a trial
        # writes its recipe file between two trainings)
        return yaml.dump(self.to_dict(), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)

    def dump(self, path: str | Path) -> Path:
        """Write the recipe as YAML, atomically (an interrupted write never corrupts an existing recipe)."""
        return atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a recipe must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"{source}: {format_validation_error(e)}") from None

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        return cls.from_dict(load_yaml(path, what="recipe file"), source=str(path))


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _finite_values(d: dict[str, Any], what: str) -> dict[str, Any]:
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{what}.{k}: must be a finite number, got {v}")
    return d
