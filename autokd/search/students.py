"""Student candidates of a :class:`~autokd.search.space.SearchSpace`: enumerate, sample and mutate the
space's student decisions (``student`` and ``student.<label>.<kwarg>``), and turn a candidate back into
the Optuna parameters that make ``space.suggest`` build it (for ``study.enqueue_trial``)."""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..recipe import StudentSpec
from .params import Choice, Fixed, Param, Range

__all__ = ["StudentCandidate", "enumerate_students", "sample_students", "random_student", "mutate_student"]


@dataclass(eq=False)
class StudentCandidate:
    """One student of a space: the space's option ``label`` plus the value of each of its kwargs."""

    option: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity (option label + kwargs), for de-duplication."""
        return self.option + "|" + json.dumps(self.kwargs, sort_keys=True, default=str)

    @property
    def label(self) -> str:
        return self.spec().label()

    def spec(self) -> StudentSpec:
        return StudentSpec(name=self.name, kwargs=dict(self.kwargs))

    def params(self, space) -> dict[str, Any]:
        """The Optuna parameters (searched decisions only) that make ``space.suggest`` build this student."""
        opt = _option(space, self.option)
        out: dict[str, Any] = {}
        if len(space.students) > 1:
            out["student"] = self.option
        for k, p in opt.kwargs.items():
            if not isinstance(p, Fixed):
                out[f"student.{opt.label}.{k}"] = self.kwargs[k]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"student": self.label, "option": self.option, "name": self.name, "kwargs": dict(self.kwargs)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StudentCandidate) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


def _option(space, label: str):
    for s in space.students:
        if s.label == label:
            return s
    raise ConfigError(f"{space.source}: no student option {label!r}")


def _values(p: Param) -> list[Any] | None:
    """Every value of a discrete parameter; ``None`` for a continuous range."""
    if isinstance(p, Fixed):
        return [p.value]
    if isinstance(p, Choice):
        return list(p.choices)
    if isinstance(p, Range) and p.integer:
        step = 1 if p.log else int(p.step or 1)
        return list(range(int(p.low), int(p.high) + 1, step))
    return None


def _draw(p: Param, rng: random.Random) -> Any:
    vals = _values(p)
    if vals is not None:
        return rng.choice(vals)
    assert isinstance(p, Range)
    if p.log:
        return math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    if p.step:
        k = int(round((p.high - p.low) / p.step))
        return p.low + p.step * rng.randint(0, k)
    return rng.uniform(p.low, p.high)


def enumerate_students(space) -> list[StudentCandidate] | None:
    """Every discrete student configuration, in the space's order; ``None`` if a kwarg is a float range."""
    out: list[StudentCandidate] = []
    for opt in space.students:
        names = list(opt.kwargs)
        values = [_values(opt.kwargs[k]) for k in names]
        if any(v is None for v in values):
            return None
        for combo in itertools.product(*values):
            out.append(StudentCandidate(opt.label, opt.name, dict(zip(names, combo, strict=True))))
    return out


def random_student(space, rng: random.Random) -> StudentCandidate:
    """A student drawn like Optuna's random sampler would: a uniform option, then each kwarg uniformly."""
    opt = rng.choice(space.students)
    return StudentCandidate(opt.label, opt.name, {k: _draw(p, rng) for k, p in opt.kwargs.items()})


def sample_students(space, n: int, seed: int = 0) -> list[StudentCandidate]:
    """``n`` distinct students: all of them (shuffled with ``seed``) when the space holds at most ``n``
    discrete configurations, else a seeded uniform sample without repeats."""
    if n < 1:
        raise ConfigError(f"number of candidates must be >= 1, got {n}")
    rng = random.Random(seed)
    every = enumerate_students(space)
    if every is not None:
        rng.shuffle(every)
        return every[:n]
    seen: dict[str, StudentCandidate] = {}
    tries = 0
    while len(seen) < n and tries < 50 * n:
        c = random_student(space, rng)
        seen.setdefault(c.key, c)
        tries += 1
    return list(seen.values())


def mutate_student(space, cand: StudentCandidate, rng: random.Random) -> StudentCandidate:
    """Change ONE student decision: the family/option (its kwargs then drawn afresh) or one searched kwarg
    of the current option (to a different value when there is one)."""
    opt = _option(space, cand.option)
    decisions: list[str | None] = [k for k, p in opt.kwargs.items() if not isinstance(p, Fixed)]
    if len(space.students) > 1:
        decisions.append(None)  # None = the option itself
    if not decisions:
        return cand
    which = rng.choice(decisions)
    if which is None:
        other = rng.choice([s for s in space.students if s.label != opt.label])
        return StudentCandidate(other.label, other.name, {k: _draw(p, rng) for k, p in other.kwargs.items()})
    p = opt.kwargs[which]
    vals = _values(p)
    if vals is not None:
        choices = [v for v in vals if v != cand.kwargs.get(which)] or vals
        new = rng.choice(choices)
    else:
        new = _draw(p, rng)
    return StudentCandidate(opt.label, opt.name, {**cand.kwargs, which: new})
