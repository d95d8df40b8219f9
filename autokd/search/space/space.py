""":class:`SearchSpace`: a space file validated (:mod:`.schema`), compiled once into its decision tree
(:mod:`.compile`), and sampled define-by-run from that tree (:mod:`.suggest`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...errors import ConfigError
from ...files import format_validation_error, load_yaml
from ...recipe import OptimSpec, Recipe, StudentSpec, TermSpec
from ..params import Fixed, Param
from ..tree import Decision, count_configurations, render_tree, walk
from .compile import WeightRangeOf, compile_tree
from .schema import SpaceFile, StudentEntry
from .suggest import recipe_from_params, suggest_params

__all__ = ["SearchSpace"]


class SearchSpace:
    """A compiled search space. Build it with :meth:`load` or :meth:`from_dict`; :meth:`with_weight_range`
    gives the same space with the default term weight ranges of a study's models
    (:func:`autokd.search.weight_ranges.space_for_models`)."""

    def __init__(self, file: SpaceFile, source: str = "<space>", raw: dict[str, Any] | None = None,
                 weight_range: WeightRangeOf | None = None) -> None:
        self.file = file
        self.source = source
        self.raw = dict(raw or {})
        self.weight_range = weight_range
        self._tree = compile_tree(file, weight_range)

    def with_weight_range(self, weight_range: WeightRangeOf | None) -> SearchSpace:
        """This space recompiled with ``weight_range(loss, pairs) -> (low, high)`` as the default weight range
        of every term the file leaves without ``weight`` (``None``: the losses' own ``weight_range``). The file
        and its raw content, hence the study fingerprint, are unchanged."""
        return SearchSpace(self.file, source=self.source, raw=self.raw, weight_range=weight_range)

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        return cls.from_dict(load_yaml(path, what="search space"), source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<space>") -> SearchSpace:
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
        try:
            file = SpaceFile.model_validate(d)
        except ValidationError as e:
            raise ConfigError(f"{source}: {format_validation_error(e)}") from None
        return cls(file, source=source, raw=d)

    # ---- what the file says ----------------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.file.description

    @property
    def students(self) -> list[StudentEntry]:
        """The student options (``label``, ``name``, ``kwargs``: name -> Param), in the file's order."""
        return self.file.student

    @property
    def ce_weight(self) -> Param:
        return self.file.ce_weight

    @property
    def temperature(self) -> Param | None:
        """The temperature shared by every term, if the file gives one."""
        return self.file.temperature

    @property
    def optim(self) -> dict[str, Param]:
        return self.file.optim_params()

    # ---- the decision tree -----------------------------------------------------------------------
    def tree(self) -> list[Decision]:
        """The ordered decisions (conditional children under their parent's choice)."""
        return list(self._tree)

    def count_configurations(self) -> int:
        return count_configurations(self._tree)

    def parameters(self) -> list[str]:
        """Every parameter name the space can suggest (conditional ones included), in tree order."""
        seen: dict[str, None] = {}
        for d in walk(self._tree):
            if not isinstance(d.param, Fixed):
                seen.setdefault(d.name)
        return list(seen)

    # ---- sampling --------------------------------------------------------------------------------
    def suggest(self, trial) -> Recipe:
        """Define-by-run: ask ``trial`` for every decision it reaches in :meth:`tree` (conditional ones
        only under their parent's choice) and return the :class:`Recipe` those values make."""
        return self.recipe_from_params(suggest_params(self._tree, trial))

    def recipe_from_params(self, params: Mapping[str, Any]) -> Recipe:
        """The recipe that parameter values make (a trial's ``params``; fixed decisions may be left out)."""
        return recipe_from_params(self._tree, params, source=self.source)

    # ---- baselines -------------------------------------------------------------------------------
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
        """The CE-only student (``kind='ce_only'``; ``'ce'`` in older studies) or plain KD (``kind='kd'``),
        same student and optimiser (default: the first student choice at its midpoint, the optimiser's
        midpoints)."""
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
        """Every student option builds, and fixed layer pairs fit the teacher's and every student option's
        stages. Raises a one-line ConfigError naming the field."""
        from ... import models
        from ...pairs import check_pairs

        fixed_pairs = [(".".join(map(str, (*term, *c.at, "pairs"))), c.pairs)
                       for term, c in self.file.term_choices() if isinstance(c.pairs, list)]
        for s in self.students:
            spec = s.midpoint()
            net = models.create(spec.name, num_classes, in_channels=input_shape[0], **spec.kwargs)
            if not fixed_pairs:
                continue
            shapes = models.shapes(net, tuple(input_shape))
            for where, pairs in fixed_pairs:
                try:
                    check_pairs(pairs, teacher_shapes, shapes, where=f"{self.source}: {where}")
                except ConfigError as e:
                    raise ConfigError(f"{e} (student {s.label})") from None

    # ---- description -----------------------------------------------------------------------------
    def describe(self) -> str:
        lines = [f"search space {self.source}" + (f" — {self.description}" if self.description else "")]
        lines += render_tree(self._tree, "  ")
        fixed = [f"{k}={p}" for k, p in self.optim.items() if isinstance(p, Fixed)]
        if fixed:
            lines.append("  fixed: " + ", ".join(fixed))
        lines.append(f"distinct discrete configurations: {self.count_configurations():,}")
        return "\n".join(lines)
