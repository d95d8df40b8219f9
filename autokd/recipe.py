"""A :class:`Recipe` says everything about one way to distil: student, distillation terms, scheme, optimiser.

Recipes round-trip through YAML (with a schema version) and carry their provenance (study, trial,
metrics, seed, autokd version), so an exported best recipe can be retrained or plugged into a user's loop.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._version import __version__
from .errors import ConfigError

__all__ = ["Recipe", "StudentSpec", "TermSpec", "SchemeSpec", "OptimSpec", "Provenance", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class StudentSpec(_Strict):
    """A model from the zoo: ``name`` plus keyword arguments of its factory (e.g. depth, width)."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_known(cls, v: str) -> str:
        from . import models

        if not (v.startswith("tv/") or ":" in v):
            models.MODELS.canonical(v, where="student.name")
        return v

    def label(self) -> str:
        if not self.kwargs:
            return self.name
        return self.name + "(" + ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items())) + ")"


class TermSpec(_Strict):
    """One distillation term: ``weight × loss(student, teacher)``."""

    loss: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)
    pairs: list[tuple[int, int]] | Literal["auto"] | dict[str, list[float]] | None = None

    @model_validator(mode="after")
    def _check(self) -> TermSpec:
        from . import losses

        cls = losses.LOSSES.get(self.loss, where="terms[].loss")
        self.params = cls.resolve_hparams(self.params)
        if self.weight < 0:
            raise ValueError(f"terms[].weight must be >= 0, got {self.weight}")
        if isinstance(self.pairs, dict):
            depths = self.pairs.get("depths")
            if set(self.pairs) != {"depths"} or not depths or any(not 0 < d <= 1 for d in depths):
                raise ValueError("terms[].pairs: a mapping must be {depths: [relative depths in (0, 1]]}")
        return self


class SchemeSpec(_Strict):
    name: str = "standard"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from . import schemes

        schemes.SCHEMES.canonical(v, where="scheme.name")
        return v

    @model_validator(mode="after")
    def _params(self) -> SchemeSpec:
        from . import schemes

        schemes.create(self.name, **self.params)  # validates the parameters now, not at build time
        return self


class OptimSpec(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(15, ge=1)


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
    ce_weight: float = Field(1.0, ge=0)
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

    def dump(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)  # atomic: an interrupted write never corrupts an existing recipe
        return path

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
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: malformed YAML ({_yaml_where(e)})") from None
        return cls.from_dict(data, source=str(path))

    # ---- building -----------------------------------------------------------------------------
    def build_student(self, num_classes: int, in_channels: int):
        from . import models

        return models.create(self.student.name, num_classes, in_channels=in_channels, **self.student.kwargs)

    def build(self, num_classes: int, input_shape: tuple[int, int, int], teacher=None):
        """Build ``(student, distiller_terms, scheme)`` for this recipe.

        ``teacher`` (an ``nn.Module`` with ``forward_outputs``) is needed when the recipe has terms whose
        losses build connectors from the teacher's shapes.
        """
        from . import schemes
        from .distiller import build_terms

        student = self.build_student(num_classes, input_shape[0])
        terms = build_terms(self, student, teacher, input_shape)
        scheme = schemes.create(self.scheme.name, **self.scheme.params)
        return student, terms, scheme


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def format_validation_error(e: ValidationError) -> str:
    """One line naming the first failing field and why."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    extra = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{loc}: {msg}{extra}"
