"""The schema of ``search_spaces/*.yaml`` and the ONE place a space file is checked.

Structure (types, allowed keys) and meaning (names and parameters against the registries) are both
pydantic validators of these models, so every mistake is one line naming the field: a student's model
and factory kwargs, each term's loss, hyper-parameters (``HParam.check``/``resolve`` on every fixed value,
choice and range bound), weight and layer pairs (only for losses that take feature pairs), the pick's
bounds, each scheme and its parameters, the optimiser fields (``OptimSpec``), a shared temperature
(against every term loss that has one), the version and ``budget.epochs`` versus ``optim.epochs``.
Values arrive as :mod:`autokd.search.params` objects (see :mod:`.values`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ...files import invalid
from ...hparams import HParam, resolve
from ...recipe import OptimSpec, StudentSpec
from ..params import Fixed, Param, Range
from .values import FileModel, Number, Value, ValueInput, by_shape, finite_number, located, param_values

__all__ = ["SpaceFile", "StudentEntry", "TermSlotSpec", "TermPickSpec", "PairSearchSpec", "TermChoice",
           "WEIGHT", "TEMPERATURE", "DEPTH"]

#: What a weight (a term's, or the CE term's) may be.
WEIGHT = HParam(1.0, low=0.0, high=10.0, doc="a term's weight or the cross-entropy weight")
#: What a temperature shared by every term may be (each term's loss may ask more).
TEMPERATURE = HParam(4.0, low=1.0, high=16.0, log=True, doc="a softmax temperature")
#: What a relative layer depth of a searched pair may be (1.0: the deepest stage).
DEPTH = HParam(1.0, low=0.25, high=1.0, valid="(0, 1]", doc="a relative layer depth")

Params = Annotated[Optional[dict[str, Value]], BeforeValidator(
    lambda v: None if v == "default" else v,
    json_schema_input_type=Union[dict[str, ValueInput], Literal["default"], None])]


def _loss_class(name: str, *at: str | int) -> Any:
    from ...losses import LOSSES

    with located(*at):
        return LOSSES.get(name)


def takes_pairs(loss_class: Any) -> bool:
    """Whether a loss works on stage features (and so takes layer pairs)."""
    return bool({"feats", "preacts"} & set(loss_class.needs))


def _declared(declared: dict[str, HParam], name: str, p: Param, owner: str, *at: str | int) -> None:
    """``name`` is a declared hyper-parameter of ``owner`` and each of ``p``'s values is valid for it."""
    for v in param_values(p):
        with located(*at):
            resolve(declared, {name: v}, owner)


def _valid(h: HParam, p: Param, what: str, *at: str | int) -> None:
    """Each of ``p``'s values (fixed value, choices, range bounds) is valid for ``h``."""
    for v in param_values(p):
        with located(*at):
            h.check(v, what)


# ------------------------------------------------------------------------------------------------ students
class StudentEntry(FileModel):
    """One student choice: a model and its factory's keyword arguments, each a value."""

    name: str = Field(description="a zoo model name (see `autokd list models`), tv/<name> or module:callable")
    kwargs: Annotated[dict[str, Value], BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=dict, description="factory parameters, each a value (fixed, a choice or a range)")

    @model_validator(mode="after")
    def _in_the_zoo(self) -> StudentEntry:
        if self.name.startswith("tv/") or ":" in self.name:  # torchvision / user models: checked when built
            return self
        from ... import models

        with located("name"):
            factory = models.MODELS.get(self.name)
        allowed = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")]
        for k in self.kwargs:
            if k not in allowed:
                invalid(f"model {self.name!r} has no parameter {k!r}; allowed: {', '.join(allowed) or 'none'}",
                        "kwargs", k)
        return self

    @property
    def label(self) -> str:
        """The value of the ``student`` decision: the name plus the fixed kwargs (``cnn(width=2)``)."""
        fixed = ",".join(f"{k}={p.value}" for k, p in self.kwargs.items() if isinstance(p, Fixed))
        return self.name + (f"({fixed})" if fixed else "")

    def midpoint(self) -> StudentSpec:
        return StudentSpec(name=self.name, kwargs={k: p.midpoint() for k, p in self.kwargs.items()})


def _as_entries(v: Any) -> Any:
    items = v if isinstance(v, list) else [v]
    return [{"name": x} if isinstance(x, str) else x for x in items]


def _distinct_students(students: list[StudentEntry]) -> list[StudentEntry]:
    if not students:
        invalid("empty choice list")
    labels = [s.label for s in students]
    if len(set(labels)) != len(labels):
        invalid(f"duplicate choices {labels}")
    return students


Students = Annotated[list[StudentEntry], BeforeValidator(
    _as_entries, json_schema_input_type=Union[str, StudentEntry, list[Union[str, StudentEntry]]]),
    AfterValidator(_distinct_students)]


# ------------------------------------------------------------------------------------------------ layer pairs
class PairSearchSpec(FileModel):
    """Searched layer pairs: how many (1..max) and, for each, a relative depth among ``depths``."""

    depths: list[Number] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
                                 description="relative depths in (0, 1] (1.0: the deepest stages)")
    max: StrictInt = Field(1, description="at most this many pairs (1..number of depths)")

    @model_validator(mode="after")
    def _check(self) -> PairSearchSpec:
        if not self.depths:
            invalid("a non-empty list of relative depths in (0, 1]", "depths")
        for j, d in enumerate(self.depths):
            with located("depths", j):
                DEPTH.check(d, "a relative depth")
        if not 1 <= self.max <= len(self.depths):
            invalid(f"an integer in 1..{len(self.depths)} (the number of depths)", "max")
        return self


class PairsSearch(FileModel):
    search: PairSearchSpec


def _some_pairs(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if not pairs:
        invalid("empty list of pairs")
    return pairs


Stage = Annotated[int, Field(ge=0, strict=True)]
Pairs = Annotated[Any, by_shape("auto, a list of [teacher_stage, student_stage] or {search: {depths, max}}",
                                str=Literal["auto"],
                                list=Annotated[list[tuple[Stage, Stage]], AfterValidator(_some_pairs)],
                                dict=Annotated[PairsSearch, AfterValidator(lambda p: p.search)])]


# ------------------------------------------------------------------------------------------------ terms
@dataclass(frozen=True)
class TermChoice:
    """A loss that one term may use, with the settings the file gives it and where they are written
    (locations relative to the term: ``at`` holds weight and pairs)."""

    loss: str
    weight: Param | None
    params: dict[str, Param]
    fixed_params: bool
    pairs: Any  # None | "auto" | list of (teacher, student) stages | PairSearchSpec
    at_loss: tuple[str | int, ...]
    at_params: tuple[str | int, ...]
    at: tuple[str | int, ...] = ()

    def check(self) -> None:
        cls = _loss_class(self.loss, *self.at_loss)
        owner = f"loss {self.loss!r}"
        for k, p in self.params.items():
            _declared(cls.hparams, k, p, owner, *self.at_params, k)
        if self.weight is not None:
            _valid(WEIGHT, self.weight, "a weight", *self.at, "weight")
        if self.pairs is not None and not takes_pairs(cls):
            invalid(f"loss {self.loss!r} works on logits/embeddings and takes no layer pairs", *self.at, "pairs")


class TermSettings(FileModel):
    weight: Optional[Value] = Field(None, description="the term's weight (default: the loss's weight_range, "
                                                      "log scale, rescaled for the study's models)")
    params: Params = Field(None, description="hyper-parameter values overriding the loss's default search "
                                             "ranges, or `default`")
    pairs: Optional[Pairs] = Field(None, description="feature losses: auto, [[teacher_stage, student_stage], "
                                                     "...] or {search: {depths, max}}")
    fixed_params: StrictBool = Field(False, description="unmentioned hyper-parameters stay at their defaults "
                                                        "instead of being searched")


LossChoice = Annotated[Union[str, list[str], dict[str, Optional[dict[str, Value]]]], by_shape(
    "a loss name, a list of names or a mapping name -> params", str=str, list=list[str], dict=dict[str, Optional[dict[str, Value]]])]


class TermSlotSpec(TermSettings):
    """An explicit term: one loss, a list of losses, or a mapping loss -> its parameters; droppable."""

    loss: LossChoice = Field(description="a loss name, a list of names, or a mapping name -> params")
    optional: StrictBool = Field(False, description="the search may drop this term")

    def _losses(self) -> list[tuple[str, tuple[str | int, ...]]]:
        if isinstance(self.loss, str):
            return [(self.loss, ("loss",))]
        if isinstance(self.loss, list):
            return [(name, ("loss", j)) for j, name in enumerate(self.loss)]
        return [(name, ("loss", name)) for name in self.loss]

    def choices(self) -> list[TermChoice]:
        """One :class:`TermChoice` per loss; with several losses, slot-level ``pairs`` go to those that take
        layer pairs."""
        out = []
        for name, at_loss in self._losses():
            if isinstance(self.loss, dict):
                params, at_params = self.loss[name] or {}, ("loss", name)
            else:
                params, at_params = self.params or {}, ("params",)
            pairs = self.pairs
            if not isinstance(self.loss, str) and not takes_pairs(_loss_class(name, *at_loss)):
                pairs = None
            out.append(TermChoice(name, self.weight, params, self.fixed_params, pairs, at_loss, at_params))
        return out

    @model_validator(mode="after")
    def _check(self) -> TermSlotSpec:
        if not self.loss:
            invalid("empty choice of losses", "loss")
        if "params" in self.model_fields_set and not isinstance(self.loss, str):
            if isinstance(self.loss, dict):
                invalid("with a mapping of losses, give params under each loss name", "params")
            if len(self.loss) > 1:
                invalid("with a choice of losses, give params per loss (loss: {name: {...}})", "params")
        for name, at_loss in self._losses():
            _loss_class(name, *at_loss)
        for c in self.choices():
            c.check()
        return self


class PickSpec(FileModel):
    min: StrictInt = Field(1, description="fewest terms")
    max: Optional[StrictInt] = Field(None, description="most terms (default: min)")

    @property
    def bounds(self) -> tuple[int, int]:
        return self.min, self.min if self.max is None else self.max

    @model_validator(mode="after")
    def _check(self) -> PickSpec:
        lo, hi = self.bounds
        if lo < 0 or hi < 1 or lo > hi:
            invalid(f"need integers 0 <= min <= max, max >= 1; got min {lo}, max {hi}")
        return self


def _names_as_candidates(v: Any) -> Any:
    if isinstance(v, list):
        if not all(isinstance(n, str) for n in v):
            invalid("expected loss names")
        return {n: None for n in v}
    return v


class TermPickSpec(FileModel):
    """``pick: {min, max}`` terms, each choosing its loss among the same candidates."""

    pick: PickSpec
    from_: Annotated[dict[str, Optional[TermSettings]], BeforeValidator(
        _names_as_candidates, json_schema_input_type=Union[dict[str, Optional[TermSettings]], list[str]])] = Field(
        alias="from", description="candidate losses: a list of names or a mapping name -> settings")

    def choices(self) -> list[TermChoice]:
        out = []
        for name, s in self.from_.items():
            s = s or TermSettings()
            out.append(TermChoice(name, s.weight, s.params or {}, s.fixed_params, s.pairs, ("from", name),
                                  ("from", name, "params"), ("from", name)))
        return out

    @model_validator(mode="after")
    def _check(self) -> TermPickSpec:
        if not self.from_:
            invalid("empty choice of losses", "from")
        for c in self.choices():
            c.check()
        return self


Terms = Annotated[Union[list[TermSlotSpec], TermPickSpec], by_shape(
    "a list of terms or {pick, from}", list=list[TermSlotSpec], dict=TermPickSpec)]


# ------------------------------------------------------------------------------------------------ schemes
class SchemeChoices(FileModel):
    """``{choices: {name: params | default}}`` or ``{choices: [names]}``."""

    choices: Union[dict[str, Union[dict[str, ValueInput], Literal["default"], None]], list[str]]


def _scheme_mapping(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"choices"} and isinstance(v["choices"], (dict, list)):
        if not v["choices"]:
            invalid("empty choice list", "choices")
        v = v["choices"]
    if isinstance(v, str):
        return {v: None}
    if isinstance(v, list):
        if not v:
            invalid("empty choice list")
        if not all(isinstance(n, str) for n in v):
            invalid("expected scheme names")
        return {n: None for n in v}
    if isinstance(v, dict) and v:
        return v
    invalid("expected a name, a list of names or {choices: {name: params}}")


def _known_schemes(schemes: dict[str, Any]) -> dict[str, Any]:
    from ... import schemes as registry

    for name, params in schemes.items():
        with located(name):
            cls = registry.SCHEMES.get(name)
        for k, p in (params if isinstance(params, dict) else {}).items():
            _declared(cls.hparams, k, p, f"scheme {name!r}", name, k)
    return schemes


SchemeParams = Annotated[Union[dict[str, Value], Literal["default"], None], by_shape(
    "a mapping of parameters or default", none=None, str=Literal["default"], dict=dict[str, Value])]
Schemes = Annotated[dict[str, SchemeParams], BeforeValidator(
    _scheme_mapping, json_schema_input_type=Union[str, list[str], SchemeChoices]), AfterValidator(_known_schemes)]


# ------------------------------------------------------------------------------------------------ optimiser
def _optim_values(v: Any) -> Any:
    if v is None:
        return {}
    if not isinstance(v, dict):
        invalid("expected a mapping of optimiser fields")
    allowed = sorted(OptimSpec.model_fields)
    out = {}
    for k, spec in v.items():
        if k not in allowed:
            invalid(f"unknown field; allowed: {', '.join(allowed)}", k)
        if k == "milestones" and isinstance(spec, list):  # a list value, not a choice
            spec = Fixed([finite_number(x, k, j) for j, x in enumerate(spec)])
        out[k] = spec
    return out


def _fits_optim_spec(optim: dict[str, Param]) -> dict[str, Param]:
    """Every bound and choice, with the other fields at their midpoints, makes a valid ``OptimSpec``."""
    mid = {k: p.midpoint() for k, p in optim.items()}
    probes = [mid] + [{**mid, k: v} for k, p in optim.items() if not isinstance(p, Fixed) for v in param_values(p)]
    for probe in probes:
        try:
            OptimSpec(**{k: (int(v) if isinstance(optim[k], Range) and optim[k].integer else v)
                         for k, v in probe.items()})
        except ValidationError as e:
            err = e.errors()[0]
            invalid(err["msg"], *err["loc"])
    return optim


Optim = Annotated[dict[str, Value], BeforeValidator(
    _optim_values, json_schema_input_type=Optional[dict[str, ValueInput]]), AfterValidator(_fits_optim_spec)]


# ------------------------------------------------------------------------------------------------ the file
class BudgetSpec(FileModel):
    epochs: Optional[StrictInt] = Field(None, ge=1, description="training epochs per trial (= optim.epochs)")


def _version(v: Any) -> Any:
    if isinstance(v, bool) or v != 1:
        invalid(f"unsupported version {v!r}; this autokd reads 1")
    return v


class SpaceFile(FileModel):
    """The schema of ``search_spaces/*.yaml`` (``autokd space schema`` prints it as JSON Schema)."""

    version: Annotated[Literal[1], BeforeValidator(_version)] = 1
    description: str = ""
    student: Students = Field(description="a model name, {name, kwargs}, or a list of them to choose from")
    ce_weight: Value = Field(1.0, validate_default=True, description="weight of the cross-entropy term")
    temperature: Optional[Value] = Field(None, description="one temperature shared by every term that has one")
    terms: Terms = Field(default_factory=list, description="a list of term slots, or {pick: {min, max}, from}")
    scheme: Schemes = Field("standard", validate_default=True,
                            description="a name, a list, or {choices: {name: params | default}}")
    optim: Optim = Field(default_factory=dict, description="OptimSpec fields "
                         f"({', '.join(OptimSpec.model_fields)}), each a value")
    budget: Optional[BudgetSpec] = None

    @model_validator(mode="before")
    @classmethod
    def _student_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "student" not in data:
            invalid("required (a model name or a list of {name, kwargs})", "student")
        return data

    @field_validator("ce_weight")
    @classmethod
    def _ce_weight(cls, p: Param) -> Param:
        _valid(WEIGHT, p, "a weight")
        return p

    @model_validator(mode="after")
    def _across_fields(self) -> SpaceFile:
        if self.budget is not None and self.budget.epochs is not None and "epochs" in self.optim:
            invalid("given twice (also optim.epochs)", "budget", "epochs")
        if self.temperature is not None:
            for _, c in self.term_choices():
                h = _loss_class(c.loss).hparams.get("temperature")
                if h is not None:
                    _valid(h, self.temperature, f"loss {c.loss!r}: temperature", "temperature")
            _valid(TEMPERATURE, self.temperature, "a temperature", "temperature")
        return self

    # ---- views for the compiler ----------------------------------------------------------------
    def term_choices(self) -> list[tuple[tuple[str | int, ...], TermChoice]]:
        """Every term choice with the location of its term (``("terms", 0)``; a pick's: ``("terms",)``)."""
        if isinstance(self.terms, TermPickSpec):
            return [(("terms",), c) for c in self.terms.choices()]
        return [(("terms", i), c) for i, slot in enumerate(self.terms) for c in slot.choices()]

    def optim_params(self) -> dict[str, Param]:
        """The optimiser's fields, ``budget.epochs`` included."""
        out = dict(self.optim)
        if self.budget is not None and self.budget.epochs is not None:
            out["epochs"] = Fixed(self.budget.epochs)
        return out
