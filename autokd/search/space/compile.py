"""A validated space file -> its decision tree (:mod:`autokd.search.tree`), built once per space.

What the file leaves open is filled from the registries here: a loss's hyper-parameters not given are
searched over their default ranges (or fixed at their defaults with ``fixed_params: true``), a term's
weight defaults to the loss's ``weight_range`` (log scale) — or, when the caller knows the study's models,
to the range its ``weight_range`` callback gives (:mod:`autokd.search.weight_ranges`: the loss's
``weight_range_for`` those models) — and a scheme given as ``default`` searches its declared ranges. An
explicit ``weight`` in the file always wins. Every decision carries where its value goes in a recipe
(:class:`~autokd.search.tree.Into`).

Decision order and parameter names (stable, so studies resume and samplers learn across trials)::

    student                      the student option (its label: name plus fixed kwargs)
      student.<label>.<kw>       that option's kwargs
    ce_weight
    temperature                  only with a shared temperature (then no term asks its own)
    terms.n                      a pick with min < max: how many terms
    terms.<i>.use                an optional slot: whether the term is used
    terms.<i>.loss               the slot's loss
      terms.<i>.<loss>.<hparam>  its hyper-parameters, in declaration order
      terms.<i>.<loss>.weight
      terms.<i>.<loss>.pairs.n   searched pairs with max > 1: how many
      terms.<i>.<loss>.pairs.<k> the relative depth of pair k
    scheme
      scheme.<name>.<param>
    optim.<key>                  in the file's order (budget.epochs last)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..params import Choice, Fixed, Param, Range
from ..tree import Decision, Into, Shared
from .schema import PairSearchSpec, SpaceFile, StudentEntry, TermChoice, TermPickSpec
from .values import default_param

__all__ = ["compile_tree", "DEFAULT_WEIGHT_RANGE", "WeightRangeOf"]

#: The weight range of a loss that declares no ``weight_range``.
DEFAULT_WEIGHT_RANGE = (0.1, 10.0)

#: ``weight_range(loss, pairs) -> (low, high)``: a term's default weight range for the term choice's loss name
#: and its ``pairs`` spec as the file gives it (``None``, ``"auto"``, a list or a ``PairSearchSpec``).
WeightRangeOf = Callable[[str, Any], tuple[float, float]]


def _one_of(values: tuple[Any, ...]) -> Param:
    return Choice(values) if len(values) > 1 else Fixed(values[0])


@dataclass
class _Option:
    """A term choice with everything filled in: every hyper-parameter, the weight, the pairs."""

    loss: str
    params: dict[str, Param]
    weight: Param
    pairs: Any


def _option(c: TermChoice, weight_range: WeightRangeOf | None) -> _Option:
    from ...losses import LOSSES

    cls = LOSSES.get(c.loss)
    params = {}
    for k, h in cls.hparams.items():
        if k in c.params:
            params[k] = c.params[k]
        else:
            params[k] = Fixed(h.default) if c.fixed_params else default_param(h)
    weight = c.weight
    if weight is None:
        if weight_range is not None:
            low, high = weight_range(c.loss, c.pairs)
        else:
            low, high = getattr(cls, "weight_range", DEFAULT_WEIGHT_RANGE)
        weight = Range(float(low), float(high), log=True) if low < high else Fixed(float(low))
    return _Option(c.loss, params, weight, c.pairs)


def _pair_decisions(prefix: str, term: int, search: PairSearchSpec) -> list[Decision]:
    depth = _one_of(tuple(float(d) for d in search.depths))
    into = Into(("terms", term, "pairs", "depths"), gather=True)
    if search.max == 1:
        return [Decision(f"{prefix}.pairs.0", depth, into=into)]
    return [Decision(f"{prefix}.pairs.n", Range(1, search.max, integer=True), children={
        k: [Decision(f"{prefix}.pairs.{j}", depth, into=into) for j in range(k)] for k in range(1, search.max + 1)})]


def _option_decisions(term: int, o: _Option, shared_temperature: bool) -> list[Decision]:
    prefix = f"terms.{term}.{o.loss}"
    out = []
    for k, p in o.params.items():
        if shared_temperature and k == "temperature":
            p = Fixed(Shared("temperature"))
        out.append(Decision(f"{prefix}.{k}", p, into=Into(("terms", term, "params", k))))
    out.append(Decision(f"{prefix}.weight", o.weight, into=Into(("terms", term, "weight"))))
    if isinstance(o.pairs, PairSearchSpec):
        out += _pair_decisions(prefix, term, o.pairs)
    elif o.pairs is not None:  # "auto" or explicit stage pairs
        out.append(Decision(f"{prefix}.pairs", Fixed(o.pairs), into=Into(("terms", term, "pairs"))))
    return out


def _term(term: int, options: list[_Option], shared_temperature: bool) -> Decision:
    return Decision(f"terms.{term}.loss", _one_of(tuple(o.loss for o in options)),
                    children={o.loss: _option_decisions(term, o, shared_temperature) for o in options},
                    into=Into(("terms", term, "loss")))


def _terms(f: SpaceFile, weight_range: WeightRangeOf | None) -> list[Decision]:
    shared = f.temperature is not None
    if isinstance(f.terms, TermPickSpec):
        options = [_option(c, weight_range) for c in f.terms.choices()]
        lo, hi = f.terms.pick.bounds
        if lo == hi:
            return [_term(i, options, shared) for i in range(hi)]
        return [Decision("terms.n", Range(lo, hi, integer=True), children={
            k: [_term(i, options, shared) for i in range(k)] for k in range(lo, hi + 1)})]
    out = []
    for i, slot in enumerate(f.terms):
        d = _term(i, [_option(c, weight_range) for c in slot.choices()], shared)
        if slot.optional:
            d = Decision(f"terms.{i}.use", Choice((True, False)), children={True: [d], False: []})
        out.append(d)
    return out


def _student(students: list[StudentEntry]) -> Decision:
    return Decision("student", _one_of(tuple(s.label for s in students)), children={
        s.label: [Decision(f"student.{s.label}.{k}", p, into=Into(("student", "kwargs", k)))
                  for k, p in s.kwargs.items()] for s in students},
        into=Into(("student", "name"), rename={s.label: s.name for s in students}))


def _scheme(schemes: dict[str, Any]) -> Decision:
    from ... import schemes as registry

    children = {}
    for name, params in schemes.items():
        if params == "default":  # every searchable parameter over its declared range
            params = {k: default_param(h) for k, h in registry.SCHEMES.get(name).hparams.items() if h.searchable}
        children[name] = [Decision(f"scheme.{name}.{k}", p, into=Into(("scheme", "params", k)))
                          for k, p in (params or {}).items()]
    return Decision("scheme", _one_of(tuple(schemes)), children=children, into=Into(("scheme", "name")))


def compile_tree(f: SpaceFile, weight_range: WeightRangeOf | None = None) -> list[Decision]:
    """The ordered decisions of a validated space (conditional ones under their parent's choice).
    ``weight_range`` gives the default weight range of a term the file leaves without ``weight`` (default:
    the loss's ``weight_range``)."""
    tree = [_student(f.student), Decision("ce_weight", f.ce_weight, into=Into(("ce_weight",)))]
    if f.temperature is not None:
        tree.append(Decision("temperature", f.temperature))
    tree += _terms(f, weight_range)
    tree.append(_scheme(f.scheme))
    tree += [Decision(f"optim.{k}", p, into=Into(("optim", k))) for k, p in f.optim_params().items()]
    return tree
