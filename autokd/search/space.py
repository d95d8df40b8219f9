"""Search spaces: ``search_spaces/*.yaml`` -> a decision tree -> Optuna define-by-run ``suggest(trial) -> Recipe``.

Every value below may be a fixed value, a list of choices (``[a, b]`` or ``{choices: [...]}``) or a range
``{low, high, log?, int?, step?}``::

    version: 1
    student:                          # choose one; each family's kwargs may be searched
      - {name: cnn, kwargs: {width: [2, 3, 4]}}
      - {name: resnet, kwargs: {depth: [8, 14], width: {low: 4, high: 16, int: true}}}
    ce_weight: {low: 0.05, high: 1.0, log: true}
    temperature: {low: 1, high: 16, log: true}   # optional: ONE temperature shared by every term
    terms:                            # either a pick ...
      pick: {min: 1, max: 2}          # how many terms (1..k), each chosen among the candidates
      from:
        kd: {}                        # hyper-parameters not given: the loss's default search ranges
        dkd: {params: {beta: {low: 1, high: 8}}, weight: {low: 0.1, high: 2, log: true}}
        at: {pairs: {search: {depths: [0.5, 1.0], max: 2}}}
    # ... or a list of explicit term slots:
    # terms:
    #   - {loss: kd, weight: ..., params: {...}, optional: true}
    #   - {loss: [at, sp], pairs: auto}          # a choice of losses in one slot
    scheme: {choices: {standard: {}, eskd: {stop_fraction: {low: 0.3, high: 0.9}}, dot: default}}
                                      # or a name / a list; `default`: search the scheme's default ranges
    optim: {lr: {low: 0.01, high: 0.3, log: true}, batch_size: [32, 64]}
    budget: {epochs: 15}

Per-term options: ``params`` (ranges overriding the loss's defaults), ``fixed_params: true`` (unmentioned
hyper-parameters stay at their defaults instead of being searched), ``weight`` (default: the loss's
``weight_range``, log scale), ``pairs`` (feature losses: ``auto``, ``[[t, s], ...]`` or
``{search: {depths: [...], max: k}}`` — relative depths in (0, 1], mapped onto any teacher/student pair).

Parameter names are stable functions of the decisions (``student``, ``student.<label>.<kw>``, ``ce_weight``,
``temperature``, ``terms.n``, ``terms.<i>.use``, ``terms.<i>.loss``, ``terms.<i>.<loss>.<hparam>``,
``terms.<i>.<loss>.weight``, ``terms.<i>.<loss>.pairs.n``, ``terms.<i>.<loss>.pairs.<k>``, ``scheme``,
``scheme.<name>.<param>``, ``optim.<key>``), so studies resume and samplers learn across trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, UnknownNameError
from ..recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec
from .params import Choice, Fixed, Param, Range, parse_param
from .tree import Decision, count_configurations, render_tree

__all__ = ["SearchSpace", "SpaceFile", "StudentOption", "TermOption", "TermSlot", "PairSearch"]

_TOP_KEYS = {"version", "description", "student", "ce_weight", "temperature", "terms", "scheme", "optim", "budget"}
_OPTIM_KEYS = set(OptimSpec.model_fields)
_TERM_KEYS = {"loss", "weight", "params", "optional", "pairs", "fixed_params"}
_CANDIDATE_KEYS = {"weight", "params", "pairs", "fixed_params"}
DEFAULT_WEIGHT_RANGE = (0.1, 10.0)


# ------------------------------------------------------------------------------------------------ options
@dataclass
class StudentOption:
    name: str
    kwargs: dict[str, Param]
    label: str

    def decisions(self) -> list[Decision]:
        return [Decision(f"student.{self.label}.{k}", p) for k, p in self.kwargs.items()]

    def suggest(self, trial) -> StudentSpec:
        kw = {k: p.suggest(trial, f"student.{self.label}.{k}") for k, p in self.kwargs.items()}
        return StudentSpec(name=self.name, kwargs=kw)

    def midpoint(self) -> StudentSpec:
        return StudentSpec(name=self.name, kwargs={k: p.midpoint() for k, p in self.kwargs.items()})


@dataclass
class PairSearch:
    """Searched layer pairs: how many (1..max) and, for each, a relative depth in (0, 1]."""

    depths: tuple[float, ...]
    max_pairs: int

    def decisions(self, prefix: str) -> list[Decision]:
        pick = Choice(tuple(self.depths)) if len(self.depths) > 1 else Fixed(self.depths[0])
        if self.max_pairs == 1:
            return [Decision(f"{prefix}.pairs.0", pick)]
        n = Range(1, self.max_pairs, integer=True)
        return [Decision(f"{prefix}.pairs.n", n, children={
            k: [Decision(f"{prefix}.pairs.{j}", pick) for j in range(k)] for k in range(1, self.max_pairs + 1)})]

    def suggest(self, trial, prefix: str) -> dict[str, list[float]]:
        pick = Choice(tuple(self.depths)) if len(self.depths) > 1 else Fixed(self.depths[0])
        n = 1 if self.max_pairs == 1 else trial.suggest_int(f"{prefix}.pairs.n", 1, self.max_pairs)
        depths = sorted({float(pick.suggest(trial, f"{prefix}.pairs.{j}")) for j in range(n)})
        return {"depths": depths}


@dataclass
class TermOption:
    """One loss that a term slot may use, with its searched hyper-parameters, weight and pairs."""

    loss: str
    params: dict[str, Param]
    weight: Param
    pairs: Any = None  # None | "auto" | list of pairs | PairSearch

    def decisions(self, prefix: str, shared_temperature: bool) -> list[Decision]:
        p = f"{prefix}.{self.loss}"
        out = [Decision(f"{p}.{k}", v) for k, v in self.params.items()
               if not (shared_temperature and k == "temperature")]
        out.append(Decision(f"{p}.weight", self.weight))
        if isinstance(self.pairs, PairSearch):
            out += self.pairs.decisions(p)
        return out

    def suggest(self, trial, prefix: str, temperature: float | None) -> TermSpec:
        p = f"{prefix}.{self.loss}"
        params = {}
        for k, v in self.params.items():
            if k == "temperature" and temperature is not None:
                params[k] = temperature
            else:
                params[k] = v.suggest(trial, f"{p}.{k}")
        weight = self.weight.suggest(trial, f"{p}.weight")
        pairs = self.pairs.suggest(trial, p) if isinstance(self.pairs, PairSearch) else self.pairs
        return TermSpec(loss=self.loss, weight=weight, params=params, pairs=pairs)


@dataclass
class TermSlot:
    """An explicit term: one loss or a choice among several; optionally droppable."""

    index: int
    options: list[TermOption]
    optional: bool = False

    @property
    def prefix(self) -> str:
        return f"terms.{self.index}"

    def _loss_param(self) -> Param:
        names = tuple(o.loss for o in self.options)
        return Choice(names) if len(names) > 1 else Fixed(names[0])

    def decisions(self, shared_temperature: bool) -> list[Decision]:
        loss = Decision(f"{self.prefix}.loss", self._loss_param(), children={
            o.loss: o.decisions(self.prefix, shared_temperature) for o in self.options})
        if not self.optional:
            return [loss]
        return [Decision(f"{self.prefix}.use", Choice((True, False)), children={True: [loss], False: []})]

    def suggest(self, trial, temperature: float | None) -> TermSpec | None:
        if self.optional and not trial.suggest_categorical(f"{self.prefix}.use", [True, False]):
            return None
        name = self._loss_param().suggest(trial, f"{self.prefix}.loss")
        opt = next(o for o in self.options if o.loss == name)
        return opt.suggest(trial, self.prefix, temperature)


@dataclass
class TermPick:
    """``pick: {min, max}`` terms, each slot choosing among the same candidates."""

    min: int
    max: int
    candidates: list[TermOption]

    def _slot(self, i: int, shared_temperature: bool) -> Decision:
        names = tuple(o.loss for o in self.candidates)
        param = Choice(names) if len(names) > 1 else Fixed(names[0])
        return Decision(f"terms.{i}.loss", param, children={
            o.loss: o.decisions(f"terms.{i}", shared_temperature) for o in self.candidates})

    def decisions(self, shared_temperature: bool) -> list[Decision]:
        if self.min == self.max:
            return [self._slot(i, shared_temperature) for i in range(self.max)]
        return [Decision("terms.n", Range(self.min, self.max, integer=True), children={
            k: [self._slot(i, shared_temperature) for i in range(k)] for k in range(self.min, self.max + 1)})]

    def suggest(self, trial, temperature: float | None) -> list[TermSpec]:
        n = self.min if self.min == self.max else trial.suggest_int("terms.n", self.min, self.max)
        names = [o.loss for o in self.candidates]
        out = []
        for i in range(n):
            name = names[0] if len(names) == 1 else trial.suggest_categorical(f"terms.{i}.loss", names)
            opt = next(o for o in self.candidates if o.loss == name)
            out.append(opt.suggest(trial, f"terms.{i}", temperature))
        return out


@dataclass
class SchemeOption:
    name: str
    params: dict[str, Param]


# ------------------------------------------------------------------------------------------------ the space
@dataclass
class SearchSpace:
    """A compiled search space. Build it with :meth:`load` or :meth:`from_dict`."""

    students: list[StudentOption]
    ce_weight: Param
    terms: list[TermSlot] | TermPick
    schemes: list[SchemeOption]
    optim: dict[str, Param]
    temperature: Param | None = None
    source: str = "<space>"
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        from ..files import load_yaml

        path = Path(path)
        return cls.from_dict(load_yaml(path, what="search space"), source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<space>") -> SearchSpace:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        unknown = set(d) - _TOP_KEYS
        if unknown:
            k = sorted(unknown)[0]
            raise ConfigError(f"{source}: {k}: unknown field; allowed: {', '.join(sorted(_TOP_KEYS))}")
        if d.get("version", 1) != 1:
            raise ConfigError(f"{source}: version: unsupported version {d.get('version')!r}; this autokd reads 1")
        try:
            students = _parse_students(d.get("student"), source)
            ce = _nonneg(parse_param(d.get("ce_weight", 1.0), f"{source}: ce_weight"), f"{source}: ce_weight")
            temperature = None
            if d.get("temperature") is not None:
                temperature = parse_param(d["temperature"], f"{source}: temperature")
                _check_positive(temperature, f"{source}: temperature")
            terms = _parse_terms(d.get("terms", []), source)
            schemes = _parse_schemes(d.get("scheme", "standard"), source)
            optim_spec = dict(d.get("optim", {}) or {})
            budget = d.get("budget") or {}
            if not isinstance(budget, dict) or set(budget) - {"epochs"}:
                raise ConfigError(f"{source}: budget: expected {{epochs: N}}")
            if "epochs" in budget:
                if "epochs" in optim_spec:
                    raise ConfigError(f"{source}: budget.epochs: given twice (also optim.epochs)")
                optim_spec["epochs"] = budget["epochs"]
            optim = _parse_optim(optim_spec, source)
        except UnknownNameError as e:
            raise ConfigError(f"{source}: {e}") from None
        validate_file(d, source)
        return cls(students, ce, terms, schemes, optim, temperature=temperature, source=source,
                   description=d.get("description", ""), raw=d)

    # ---- the decision tree -----------------------------------------------------------------------
    @property
    def _shared_t(self) -> bool:
        return self.temperature is not None

    def tree(self) -> list[Decision]:
        """The ordered decisions (conditional children under their parent's choice)."""
        labels = tuple(s.label for s in self.students)
        out = [Decision("student", Choice(labels) if len(labels) > 1 else Fixed(labels[0]),
                        children={s.label: s.decisions() for s in self.students})]
        out.append(Decision("ce_weight", self.ce_weight))
        if self.temperature is not None:
            out.append(Decision("temperature", self.temperature))
        if isinstance(self.terms, TermPick):
            out += self.terms.decisions(self._shared_t)
        else:
            for slot in self.terms:
                out += slot.decisions(self._shared_t)
        names = tuple(s.name for s in self.schemes)
        out.append(Decision("scheme", Choice(names) if len(names) > 1 else Fixed(names[0]), children={
            s.name: [Decision(f"scheme.{s.name}.{k}", p) for k, p in s.params.items()] for s in self.schemes}))
        out += [Decision(f"optim.{k}", p) for k, p in self.optim.items()]
        return out

    def count_configurations(self) -> int:
        return count_configurations(self.tree())

    # ---- sampling ------------------------------------------------------------------------------
    def suggest(self, trial) -> Recipe:
        """Define-by-run: ask ``trial`` for every decision (conditional ones only when their parent is
        chosen) and return the :class:`Recipe`. Mirrors :meth:`tree` decision for decision."""
        labels = [s.label for s in self.students]
        label = labels[0] if len(labels) == 1 else trial.suggest_categorical("student", labels)
        student = next(s for s in self.students if s.label == label).suggest(trial)
        ce_weight = self.ce_weight.suggest(trial, "ce_weight")
        temperature = None if self.temperature is None else self.temperature.suggest(trial, "temperature")
        if isinstance(self.terms, TermPick):
            terms = self.terms.suggest(trial, temperature)
        else:
            terms = [t for t in (slot.suggest(trial, temperature) for slot in self.terms) if t is not None]
        names = [s.name for s in self.schemes]
        name = names[0] if len(names) == 1 else trial.suggest_categorical("scheme", names)
        sopt = next(s for s in self.schemes if s.name == name)
        sparams = {k: p.suggest(trial, f"scheme.{name}.{k}") for k, p in sopt.params.items()}
        optim = OptimSpec(**{k: p.suggest(trial, f"optim.{k}") for k, p in self.optim.items()})
        return Recipe(student=student, ce_weight=ce_weight, terms=terms, scheme=SchemeSpec(name=name, params=sparams),
                      optim=optim)

    def baseline_students(self, max_n: int = 4) -> list[StudentSpec]:
        """Students to run baselines for: every student choice (at its midpoint) when there are at most
        ``max_n``, else the first."""
        chosen = self.students if len(self.students) <= max_n else self.students[:1]
        return [s.midpoint() for s in chosen]

    def default_student(self) -> StudentSpec:
        return self.students[0].midpoint()

    def default_optim(self) -> OptimSpec:
        return OptimSpec(**{k: p.midpoint() for k, p in self.optim.items()})

    def baseline(self, kind: str, *, student: StudentSpec | None = None, optim: OptimSpec | None = None,
                 temperature: float = 4.0, kd_weight: float = 0.9, ce_weight: float = 0.1) -> Recipe:
        """The CE-only student (``kind='ce_only'``) or plain KD (``kind='kd'``), same student and optimiser
        (default: the first student choice at its midpoint, the optimiser's midpoints)."""
        student = student or self.default_student()
        optim = optim or self.default_optim()
        if kind in ("ce_only", "ce"):
            return Recipe(student=student, ce_weight=1.0, terms=[], optim=optim)
        if kind == "kd":
            return Recipe(student=student, ce_weight=ce_weight, optim=optim,
                          terms=[TermSpec(loss="kd", weight=kd_weight, params={"temperature": temperature})])
        raise ConfigError(f"baseline kind must be ce_only or kd, got {kind!r}")

    # ---- checks against the study's models -------------------------------------------------------
    def check_models(self, teacher_shapes, num_classes: int, input_shape) -> None:
        """Validate fixed layer pairs against the teacher's and every student option's stage counts, and
        that every student option builds. Raises a one-line ConfigError naming the field."""
        from .. import models

        fixed_pairs = []
        slots = self.terms.candidates if isinstance(self.terms, TermPick) else [
            o for s in self.terms for o in s.options]
        for o in slots:
            if isinstance(o.pairs, list):
                fixed_pairs.append((o.loss, o.pairs))
        for s in self.students:
            spec = s.midpoint()
            net = models.create(spec.name, num_classes, in_channels=input_shape[0], **spec.kwargs)
            if not fixed_pairs:
                continue
            sh = models.shapes(net, tuple(input_shape))
            for loss, pairs in fixed_pairs:
                for ti, si in pairs:
                    if not (0 <= ti < teacher_shapes.num_stages and 0 <= si < sh.num_stages):
                        raise ConfigError(
                            f"{self.source}: terms.{loss}.pairs: ({ti}, {si}) out of range; the teacher has "
                            f"stages 0..{teacher_shapes.num_stages - 1}, student {s.label} has "
                            f"0..{sh.num_stages - 1}")

    # ---- description -----------------------------------------------------------------------------
    def parameters(self) -> list[str]:
        """Every parameter name the space can suggest (conditional ones included), in tree order."""
        from .tree import walk

        seen: list[str] = []
        for d in walk(self.tree()):
            if not isinstance(d.param, Fixed) and d.name not in seen:
                seen.append(d.name)
        return seen

    def describe(self) -> str:
        lines = [f"search space {self.source}" + (f" — {self.description}" if self.description else "")]
        lines += render_tree(self.tree(), "  ")
        fixed = [f"{k}={p}" for k, p in self.optim.items() if isinstance(p, Fixed)]
        if fixed:
            lines.append("  fixed: " + ", ".join(fixed))
        lines.append(f"distinct discrete configurations: {self.count_configurations():,}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ file schema
#: A value in a space file: fixed (number/string/bool), a list of choices, or a mapping (a range
#: ``{low, high, log, int, step}`` or ``{choices: [...]}``).
Value = Union[None, bool, int, float, str, list[Any], dict[str, Any]]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StudentEntry(_File):
    name: str = Field(description="a zoo model name (see `autokd list models`), tv/<name> or module:callable")
    kwargs: dict[str, Value] = Field(default_factory=dict, description="factory parameters, each a Value")


class PairSearchSpec(_File):
    depths: list[float] = Field(default=[0.25, 0.5, 0.75, 1.0], description="relative depths in (0, 1]")
    max: int = Field(1, ge=1, description="at most this many pairs")


class PairsSearch(_File):
    search: PairSearchSpec


Pairs = Union[Literal["auto"], list[tuple[int, int]], PairsSearch, None]


class TermCandidate(_File):
    weight: Value = Field(None, description="the term's weight (default: the loss's weight_range, log scale)")
    params: Union[dict[str, Value], Literal["default"], None] = Field(
        None, description="hyper-parameter values/ranges overriding the loss's default ranges")
    pairs: Pairs = Field(None, description="layer pairs: auto, [[teacher, student], ...] or {search: ...}")
    fixed_params: bool = Field(False, description="unmentioned hyper-parameters stay at their defaults")


class TermSlotSpec(TermCandidate):
    loss: Union[str, list[str], dict[str, Union[dict[str, Value], None]]] = Field(
        description="a loss name, a list of names, or a mapping name -> params")
    optional: bool = Field(False, description="the search may drop this term")


class PickSpec(_File):
    min: int = Field(1, ge=0)
    max: int | None = Field(None, ge=1)


class TermPickSpec(_File):
    pick: PickSpec
    from_: Union[dict[str, Union[TermCandidate, None]], list[str]] = Field(alias="from")


class BudgetSpec(_File):
    epochs: int = Field(ge=1)


class SpaceFile(_File):
    """The schema of ``search_spaces/*.yaml`` (``autokd space schema`` prints it as JSON Schema)."""

    version: Literal[1] = 1
    description: str = ""
    student: Union[str, StudentEntry, list[Union[str, StudentEntry]]]
    ce_weight: Value = 1.0
    temperature: Value = Field(None, description="one temperature shared by every term that has one")
    terms: Union[list[TermSlotSpec], TermPickSpec] = Field(default_factory=list)
    scheme: Value = Field("standard", description="a name, a list, or {choices: {name: params | default}}")
    optim: dict[str, Value] = Field(default_factory=dict, description="OptimSpec fields, each a Value")
    budget: BudgetSpec | None = None


def validate_file(d: dict[str, Any], source: str) -> SpaceFile:
    """Structural validation with pydantic (the semantic checks against the registries run first, with
    more specific messages)."""
    from ..recipe import format_validation_error

    try:
        return SpaceFile.model_validate(d)
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(e)}") from None


# ------------------------------------------------------------------------------------------------ parsing
def _nonneg(p: Param, where: str) -> Param:
    if isinstance(p, Fixed) and (not isinstance(p.value, (int, float)) or isinstance(p.value, bool) or p.value < 0):
        raise ConfigError(f"{where}: must be a number >= 0, got {p.value!r}")
    if isinstance(p, Range) and p.low < 0:
        raise ConfigError(f"{where}: must be >= 0, got low {p.low}")
    if isinstance(p, Choice) and any(not isinstance(v, (int, float)) or v < 0 for v in p.choices):
        raise ConfigError(f"{where}: choices must be numbers >= 0")
    return p


def _check_positive(p: Param, where: str) -> None:
    vals = [p.value] if isinstance(p, Fixed) else list(p.choices) if isinstance(p, Choice) else [p.low]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in vals):
        raise ConfigError(f"{where}: must be > 0")


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
        if not (name.startswith("tv/") or ":" in name):
            _check_model_kwargs(name, kwargs, where)
        fixed = ",".join(f"{k}={p.value}" for k, p in kwargs.items() if isinstance(p, Fixed))
        label = name + (f"({fixed})" if fixed else "")
        out.append(StudentOption(name, kwargs, label))
    labels = [s.label for s in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: student: duplicate choices {labels}")
    return out


def _check_model_kwargs(name: str, kwargs: dict[str, Param], where: str) -> None:
    import inspect

    from .. import models

    factory = models.MODELS.get(name)
    allowed = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")]
    for k in kwargs:
        if k not in allowed:
            raise ConfigError(f"{where}.kwargs.{k}: model {name!r} has no parameter {k!r}; "
                              f"allowed: {', '.join(allowed) or 'none'}")


def _weight_param(cls, spec: Any, where: str) -> Param:
    if spec is None:
        low, high = getattr(cls, "weight_range", DEFAULT_WEIGHT_RANGE)
        return Range(float(low), float(high), log=True) if low < high else Fixed(float(low))
    return _nonneg(parse_param(spec, where), where)


def _pairs(cls, spec: Any, where: str) -> Any:
    if spec is None:
        return None
    if not ({"feats", "preacts"} & set(cls.needs)):
        raise ConfigError(f"{where}: loss {cls.name!r} works on logits/embeddings and takes no layer pairs")
    if spec == "auto":
        return "auto"
    if isinstance(spec, list):
        pairs = []
        for p in spec:
            if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) and v >= 0 for v in p)):
                raise ConfigError(f"{where}: each pair is [teacher_stage, student_stage] (non-negative ints), "
                                  f"got {p!r}")
            pairs.append((p[0], p[1]))
        if not pairs:
            raise ConfigError(f"{where}: empty list of pairs")
        return pairs
    if isinstance(spec, dict) and set(spec) == {"search"}:
        s = spec["search"] if isinstance(spec["search"], dict) else {}
        if set(s) - {"depths", "max"}:
            raise ConfigError(f"{where}.search: allowed keys are depths, max")
        depths = s.get("depths", [0.25, 0.5, 0.75, 1.0])
        if (not isinstance(depths, list) or not depths
                or any(isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1 for d in depths)):
            raise ConfigError(f"{where}.search.depths: a non-empty list of relative depths in (0, 1]")
        mx = s.get("max", 1)
        if isinstance(mx, bool) or not isinstance(mx, int) or not 1 <= mx <= len(depths):
            raise ConfigError(f"{where}.search.max: an integer in 1..{len(depths)} (the number of depths)")
        return PairSearch(tuple(float(d) for d in depths), mx)
    raise ConfigError(f"{where}: expected auto, a list of [teacher_stage, student_stage] or {{search: {{...}}}}")


def _term_option(name: str, cfg: dict[str, Any], where: str) -> TermOption:
    from .. import losses

    cls = losses.LOSSES.get(name, where=where.split(": ", 1)[-1])
    params = cfg.get("params")
    fixed = bool(cfg.get("fixed_params", False))
    out: dict[str, Param] = {}
    if params not in (None, "default") and not isinstance(params, dict):
        raise ConfigError(f"{where}.params: expected a mapping of hyper-parameters or 'default'")
    given = params if isinstance(params, dict) else {}
    for k in given:
        if k not in cls.hparams:
            allowed = ", ".join(sorted(cls.hparams)) or "none"
            raise ConfigError(f"{where}.params.{k}: loss {name!r} has no hyper-parameter {k!r}; allowed: {allowed}")
    for k, h in cls.hparams.items():
        if k in given:
            p = parse_param(given[k], f"{where}.params.{k}")
            for v in (p.choices if isinstance(p, Choice) else (p.value,) if isinstance(p, Fixed) else (p.low, p.high)):
                h.check(v, f"{where}.params.{k}: loss {name!r}: {k}")
        elif fixed:
            p = Fixed(h.default)
        else:
            spec = list(h.choices) if h.kind == "categorical" else h.search_spec()
            p = parse_param(spec, f"{where}.params.{k}")
        out[k] = p
    weight = _weight_param(cls, cfg.get("weight"), f"{where}.weight")
    return TermOption(name, out, weight, _pairs(cls, cfg.get("pairs"), f"{where}.pairs"))


def _parse_terms(spec: Any, source: str) -> list[TermSlot] | TermPick:
    from .. import losses

    if isinstance(spec, dict):
        if set(spec) != {"pick", "from"}:
            raise ConfigError(f"{source}: terms: a pick needs exactly 'pick' and 'from'; got {sorted(spec)}")
        pick, cands = spec["pick"], spec["from"]
        if not isinstance(pick, dict) or set(pick) - {"min", "max"}:
            raise ConfigError(f"{source}: terms.pick: expected {{min, max}}")
        lo, hi = pick.get("min", 1), pick.get("max", pick.get("min", 1))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or lo < 0 or hi < 1 or lo > hi:
            raise ConfigError(f"{source}: terms.pick: need integers 0 <= min <= max, max >= 1; got min {lo}, max {hi}")
        if isinstance(cands, list):
            cands = {c: {} for c in cands}
        if not isinstance(cands, dict) or not cands:
            raise ConfigError(f"{source}: terms.from: empty choice of losses")
        options = []
        for name, cfg in cands.items():
            cfg = cfg or {}
            if not isinstance(cfg, dict) or set(cfg) - _CANDIDATE_KEYS:
                bad = sorted(set(cfg) - _CANDIDATE_KEYS) if isinstance(cfg, dict) else [cfg]
                raise ConfigError(f"{source}: terms.from.{name}.{bad[0]}: unknown field; allowed: "
                                  f"{', '.join(sorted(_CANDIDATE_KEYS))}")
            options.append(_term_option(name, cfg, f"{source}: terms.from.{name}"))
        return TermPick(lo, hi, options)
    if not isinstance(spec, list):
        raise ConfigError(f"{source}: terms: expected a list of terms or {{pick, from}}, got {type(spec).__name__}")
    slots: list[TermSlot] = []
    for i, item in enumerate(spec):
        where = f"{source}: terms[{i}]"
        if not isinstance(item, dict) or "loss" not in item:
            raise ConfigError(f"{where}: each term needs 'loss'")
        unknown = set(item) - _TERM_KEYS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field; allowed: {', '.join(sorted(_TERM_KEYS))}")
        loss = item["loss"]
        shared = {k: item[k] for k in ("weight", "pairs", "fixed_params", "params") if k in item}
        if isinstance(loss, str):
            per_loss = {loss: shared}
        elif isinstance(loss, list):
            if not loss:
                raise ConfigError(f"{where}.loss: empty choice of losses")
            if "params" in item and len(loss) > 1:
                raise ConfigError(f"{where}: with a choice of losses, give params per loss (loss: {{name: {{...}}}})")
            per_loss = {name: dict(shared) for name in loss}
        elif isinstance(loss, dict):
            if not loss:
                raise ConfigError(f"{where}.loss: empty choice of losses")
            if "params" in item:
                raise ConfigError(f"{where}: with a mapping of losses, give params under each loss name")
            per_loss = {}
            for name, params in loss.items():
                per_loss[name] = {**shared, "params": params if params is not None else {}}
        else:
            raise ConfigError(f"{where}.loss: expected a loss name, a list or a mapping of names to params")
        if not isinstance(loss, str) and "pairs" in item:
            # slot-level pairs apply to the losses of the choice that take layer pairs
            for name, cfg in per_loss.items():
                if not ({"feats", "preacts"} & set(losses.LOSSES.get(name, where=f"terms[{i}].loss").needs)):
                    cfg.pop("pairs", None)
        options = [_term_option(name, cfg, f"{where}") for name, cfg in per_loss.items()]
        optional = item.get("optional", False)
        if not isinstance(optional, bool):
            raise ConfigError(f"{where}.optional: must be true or false")
        slots.append(TermSlot(i, options, optional=optional))
    return slots


def _parse_schemes(spec: Any, source: str) -> list[SchemeOption]:
    from .. import schemes

    if isinstance(spec, str):
        spec = {spec: {}}
    elif isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{source}: scheme: empty choice list")
        spec = {s: {} for s in spec}
    elif isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], (dict, list)):
        spec = spec["choices"] if isinstance(spec["choices"], dict) else {s: {} for s in spec["choices"]}
        if not spec:
            raise ConfigError(f"{source}: scheme.choices: empty choice list")
    elif not isinstance(spec, dict):
        raise ConfigError(f"{source}: scheme: expected a name, a list of names or {{choices: {{name: params}}}}")
    out = []
    for name, params in spec.items():
        cls = schemes.SCHEMES.get(str(name), where="scheme")
        if params == "default":  # search every searchable parameter over its default range
            params = {k: (h.search_spec() if h.kind in ("float", "int", "bool") else list(h.choices))
                      for k, h in cls.hparams.items() if h.searchable}
        params = params or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{source}: scheme.{name}: expected a mapping of parameters")
        allowed = cls.hparams
        parsed = {}
        for k, v in params.items():
            if k not in allowed:
                raise ConfigError(f"{source}: scheme.{name}.{k}: scheme {name!r} has no parameter {k!r}; "
                                  f"allowed: {', '.join(sorted(allowed)) or 'none'}")
            parsed[k] = parse_param(v, f"{source}: scheme.{name}.{k}")
        out.append(SchemeOption(str(name), parsed))
    return out


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
    from pydantic import ValidationError

    from ..files import format_validation_error

    probes = [{k: p.midpoint() for k, p in out.items()}]
    probes += [{**probes[0], k: b} for k, p in out.items() if isinstance(p, Range) for b in (p.low, p.high)]
    probes += [{**probes[0], k: c} for k, p in out.items() if isinstance(p, Choice) for c in p.choices]
    for probe in probes:
        try:
            OptimSpec(**{k: (int(v) if isinstance(out[k], Range) and out[k].integer else v)
                         for k, v in probe.items()})
        except ValidationError as e:
            raise ConfigError(f"{source}: optim.{format_validation_error(e)}") from None
    return out
