"""Search spaces: ``search_spaces/*.yaml`` -> Optuna define-by-run ``suggest(trial) -> Recipe``.

Format (every value may be a fixed value, a list of choices or a ``{low, high, log, int, step}`` range)::

    version: 1
    student:                       # choose one; kwargs may themselves be searched
      - {name: cnn, kwargs: {width: 2}}
      - {name: cnn, kwargs: {width: [3, 4]}}
    ce_weight: {low: 0.05, high: 1.0, log: true}
    terms:                         # each term: one loss (or a choice among several)
      - loss: kd                   # or  loss: {kd: {temperature: ...}, logit_mse: {}}
        weight: {low: 0.1, high: 1.0, log: true}
        params: {temperature: {low: 1, high: 16, log: true}}   # or  params: default
        optional: false            # true: the search may drop this term
    scheme: standard               # or a list of schemes
    optim: {lr: {low: 0.01, high: 0.2, log: true}, batch_size: 64, epochs: 15}

Parameter names are stable functions of the decisions (``student``, ``ce_weight``, ``term0.loss``,
``term0.kd.temperature``, ``optim.lr``...), so studies resume and samplers learn across trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownNameError
from ..recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from .params import Choice, Fixed, Param, parse_param

__all__ = ["SearchSpace", "StudentOption", "TermOption", "TermSlot"]

_TOP_KEYS = {"version", "description", "student", "ce_weight", "terms", "scheme", "optim"}
_OPTIM_KEYS = set(OptimSpec.model_fields)


@dataclass
class StudentOption:
    name: str
    kwargs: dict[str, Param]
    label: str

    def suggest(self, trial) -> StudentSpec:
        kw = {k: p.suggest(trial, f"student.{self.label}.{k}") for k, p in self.kwargs.items()}
        return StudentSpec(name=self.name, kwargs=kw)

    def midpoint(self) -> StudentSpec:
        return StudentSpec(name=self.name, kwargs={k: p.midpoint() for k, p in self.kwargs.items()})


@dataclass
class TermOption:
    loss: str
    params: dict[str, Param]


@dataclass
class TermSlot:
    index: int
    options: list[TermOption]
    weight: Param
    optional: bool = False
    pairs: Any = None

    @property
    def prefix(self) -> str:
        return f"term{self.index}"

    def suggest(self, trial) -> TermSpec | None:
        if self.optional and not trial.suggest_categorical(f"{self.prefix}.use", [True, False]):
            return None
        if len(self.options) > 1:
            name = trial.suggest_categorical(f"{self.prefix}.loss", [o.loss for o in self.options])
            opt = next(o for o in self.options if o.loss == name)
        else:
            opt = self.options[0]
        params = {k: p.suggest(trial, f"{self.prefix}.{opt.loss}.{k}") for k, p in opt.params.items()}
        weight = self.weight.suggest(trial, f"{self.prefix}.weight")
        return TermSpec(loss=opt.loss, weight=weight, params=params, pairs=self.pairs)


@dataclass
class SearchSpace:
    """A compiled search space. Build it with :meth:`load` or :meth:`from_dict`."""

    students: list[StudentOption]
    ce_weight: Param
    terms: list[TermSlot]
    schemes: Param
    optim: dict[str, Param]
    source: str = "<space>"
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        from ..config import load_yaml

        path = Path(path)
        return cls.from_dict(load_yaml(path, what="search space"), source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<space>") -> SearchSpace:
        def err(field_: str, msg: str) -> ConfigError:
            return ConfigError(f"{source}: {field_}: {msg}")

        unknown = set(d) - _TOP_KEYS
        if unknown:
            raise err(sorted(unknown)[0], f"unknown field; allowed: {', '.join(sorted(_TOP_KEYS))}")
        if d.get("version", 1) != 1:
            raise err("version", f"unsupported version {d.get('version')!r}; this autokd reads 1")
        try:
            students = _parse_students(d.get("student"), source)
            ce = parse_param(d.get("ce_weight", 1.0), f"{source}: ce_weight")
            terms = _parse_terms(d.get("terms", []), source)
            schemes = _parse_schemes(d.get("scheme", "standard"), source)
            optim = _parse_optim(d.get("optim", {}) or {}, source)
        except UnknownNameError as e:
            raise ConfigError(f"{source}: {e}") from None
        return cls(students, ce, terms, schemes, optim, source=source, description=d.get("description", ""),
                   raw=d)

    # ---- sampling ------------------------------------------------------------------------------
    def suggest(self, trial) -> Recipe:
        """Define-by-run: ask ``trial`` for every decision (conditional ones only when their parent is
        chosen) and return the :class:`Recipe`."""
        if len(self.students) > 1:
            label = trial.suggest_categorical("student", [s.label for s in self.students])
            opt = next(s for s in self.students if s.label == label)
        else:
            opt = self.students[0]
        student = opt.suggest(trial)
        ce_weight = self.ce_weight.suggest(trial, "ce_weight")
        terms = [t for t in (slot.suggest(trial) for slot in self.terms) if t is not None]
        scheme = self.schemes.suggest(trial, "scheme")
        optim = OptimSpec(**{k: p.suggest(trial, f"optim.{k}") for k, p in self.optim.items()})
        return Recipe(student=student, ce_weight=ce_weight, terms=terms, scheme=SchemeSpec(name=scheme),
                      optim=optim)

    def default_student(self) -> StudentSpec:
        return self.students[0].midpoint()

    def default_optim(self) -> OptimSpec:
        return OptimSpec(**{k: p.midpoint() for k, p in self.optim.items()})

    def baseline(self, kind: str, *, student: StudentSpec | None = None, optim: OptimSpec | None = None,
                 temperature: float = 4.0, kd_weight: float = 0.9, ce_weight: float = 0.1) -> Recipe:
        """The CE-only student (``kind='ce'``) or plain KD (``kind='kd'``) with the same student and optimiser."""
        student = student or self.default_student()
        optim = optim or self.default_optim()
        if kind == "ce":
            return Recipe(student=student, ce_weight=1.0, terms=[], optim=optim)
        if kind == "kd":
            return Recipe(student=student, ce_weight=ce_weight, optim=optim,
                          terms=[TermSpec(loss="kd", weight=kd_weight, params={"temperature": temperature})])
        raise ConfigError(f"baseline kind must be ce or kd, got {kind!r}")

    # ---- description -----------------------------------------------------------------------------
    def parameters(self) -> list[str]:
        """Every parameter name the space can suggest (conditional ones included)."""
        names: list[str] = []
        if len(self.students) > 1:
            names.append("student")
        for s in self.students:
            names += [f"student.{s.label}.{k}" for k, p in s.kwargs.items() if p.searched]
        if self.ce_weight.searched:
            names.append("ce_weight")
        for slot in self.terms:
            if slot.optional:
                names.append(f"{slot.prefix}.use")
            if len(slot.options) > 1:
                names.append(f"{slot.prefix}.loss")
            for o in slot.options:
                names += [f"{slot.prefix}.{o.loss}.{k}" for k, p in o.params.items() if p.searched]
            if slot.weight.searched:
                names.append(f"{slot.prefix}.weight")
        if self.schemes.searched:
            names.append("scheme")
        names += [f"optim.{k}" for k, p in self.optim.items() if p.searched]
        return names

    def describe(self) -> str:
        lines = [f"search space {self.source}"]
        lines.append("student: " + " | ".join(
            s.label + ("(" + ", ".join(f"{k}={p}" for k, p in s.kwargs.items()) + ")" if s.kwargs else "")
            for s in self.students))
        lines.append(f"ce_weight: {self.ce_weight}")
        for slot in self.terms:
            opts = " | ".join(
                o.loss + "(" + ", ".join(f"{k}={p}" for k, p in o.params.items()) + ")" for o in slot.options)
            lines.append(f"{slot.prefix}{' (optional)' if slot.optional else ''}: weight={slot.weight}; {opts}")
        lines.append(f"scheme: {self.schemes}")
        lines.append("optim: " + ", ".join(f"{k}={p}" for k, p in self.optim.items()))
        return "\n".join(lines)


def _parse_students(spec: Any, source: str) -> list[StudentOption]:
    from .. import models

    if spec is None:
        raise ConfigError(f"{source}: student: required (a model name or a list of {{name, kwargs}})")
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise ConfigError(f"{source}: student: empty choice list")
    out: list[StudentOption] = []
    for i, item in enumerate(items):
        where = f"{source}: student[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item or set(item) - {"name", "kwargs"}:
            raise ConfigError(f"{where}: expected a model name or {{name, kwargs}}, got {item!r}")
        name = item["name"]
        if not (name.startswith("tv/") or ":" in name):
            models.MODELS.canonical(name, where=f"student[{i}].name")
        kwargs = {k: parse_param(v, f"{where}.kwargs.{k}") for k, v in (item.get("kwargs") or {}).items()}
        fixed = ",".join(f"{k}={p.value}" for k, p in kwargs.items() if isinstance(p, Fixed))
        label = name + (f"({fixed})" if fixed else "")
        out.append(StudentOption(name, kwargs, label))
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: student: duplicate choices {labels}")
    return out


def _parse_terms(spec: Any, source: str) -> list[TermSlot]:
    from .. import losses

    if not isinstance(spec, list):
        raise ConfigError(f"{source}: terms: expected a list of terms, got {type(spec).__name__}")
    slots: list[TermSlot] = []
    for i, item in enumerate(spec):
        where = f"{source}: terms[{i}]"
        if not isinstance(item, dict) or "loss" not in item:
            raise ConfigError(f"{where}: each term needs 'loss'")
        unknown = set(item) - {"loss", "weight", "params", "optional", "pairs"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field; allowed: loss, weight, params, "
                              "optional, pairs")
        loss = item["loss"]
        if isinstance(loss, str):
            per_loss = {loss: item.get("params", {})}
        elif isinstance(loss, dict):
            if "params" in item:
                raise ConfigError(f"{where}: with a choice of losses, give params under each loss name")
            per_loss = loss
        elif isinstance(loss, list):
            per_loss = {name: item.get("params", "default") if len(loss) == 1 else "default" for name in loss}
        else:
            raise ConfigError(f"{where}.loss: expected a loss name, a list or a mapping of names to params")
        if not per_loss:
            raise ConfigError(f"{where}.loss: empty choice of losses")
        options = []
        for name, params in per_loss.items():
            cls = losses.LOSSES.get(name, where=f"terms[{i}].loss")
            options.append(TermOption(name, _loss_params(cls, params, f"{where}.params")))
        weight = parse_param(item.get("weight", 1.0), f"{where}.weight")
        if isinstance(weight, Fixed) and (not isinstance(weight.value, (int, float)) or weight.value < 0):
            raise ConfigError(f"{where}.weight: must be a number >= 0")
        slots.append(TermSlot(i, options, weight, optional=bool(item.get("optional", False)),
                              pairs=item.get("pairs")))
    return slots


def _loss_params(cls, params: Any, where: str) -> dict[str, Param]:
    if params in (None, {}):
        return {}
    if params == "default":
        return {k: parse_param(h.search_spec() if h.kind != "categorical" else list(h.choices), f"{where}.{k}")
                for k, h in cls.hparams.items()}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: expected a mapping of hyper-parameters or 'default'")
    out = {}
    for k, v in params.items():
        if k not in cls.hparams:
            allowed = ", ".join(sorted(cls.hparams)) or "none"
            raise ConfigError(f"{where}.{k}: loss {cls.name!r} has no hyper-parameter {k!r}; allowed: {allowed}")
        out[k] = parse_param(v, f"{where}.{k}")
    return out


def _parse_schemes(spec: Any, source: str) -> Param:
    from .. import schemes

    p = parse_param(spec, f"{source}: scheme")
    values = p.choices if isinstance(p, Choice) else (p.value,) if isinstance(p, Fixed) else ()
    if not values:
        raise ConfigError(f"{source}: scheme: expected a scheme name or a list of names")
    for v in values:
        schemes.SCHEMES.canonical(str(v), where="scheme")
    return p


def _parse_optim(spec: dict[str, Any], source: str) -> dict[str, Param]:
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: optim: expected a mapping")
    out = {}
    for k, v in spec.items():
        if k not in _OPTIM_KEYS:
            raise ConfigError(f"{source}: optim.{k}: unknown field; allowed: {', '.join(sorted(_OPTIM_KEYS))}")
        if k == "milestones" and isinstance(v, list):
            out[k] = Fixed(list(v))  # a list value, not a choice (use {choices: [[...], [...]]} to search it)
        else:
            out[k] = parse_param(v, f"{source}: optim.{k}")
    try:
        OptimSpec(**{k: p.midpoint() for k, p in out.items()})
    except Exception as e:
        from pydantic import ValidationError

        from ..recipe import format_validation_error

        if isinstance(e, ValidationError):
            raise ConfigError(f"{source}: optim.{format_validation_error(e)}") from None
        raise
    return out
