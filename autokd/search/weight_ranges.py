"""Default term weight ranges that follow the study's models.

A loss whose magnitude depends on the models' shapes declares it through ``weight_scale`` (e.g. AT: its
per-position mean grows as the maps shrink), and ``weight_range_for(student, teacher, pairs)`` is its
``weight_range`` rescaled for those shapes. A space is compiled from its file alone; once a study knows its
teacher and its input shape, :func:`space_for_models` recompiles the space so that every term the file leaves
without ``weight`` searches ``weight_range_for`` on the study's models. Rules:

- the student is not chosen yet when the weight is: the range is the **union** of the ranges over the space's
  candidate students (every option at its midpoint, plus every discrete configuration when there are at most
  :data:`MAX_STUDENTS`, else a seeded sample of that many) — one static range per term choice, so Optuna sees
  one distribution per parameter and every candidate's own range is inside it;
- pairs: ``auto`` and fixed lists as given; searched pairs (``{search: {depths, max}}``) take the union over
  every distinct set of up to ``max`` of the depths; no pairs: the loss's default;
- a loss whose ``weight_scale`` is the base one (scale 1) keeps its ``weight_range`` exactly, and a space
  whose unweighted terms all use such losses is returned as it is (no model is built);
- an explicit ``weight`` in the file always wins; without models (``autokd space show`` without a study) the
  losses' ``weight_range`` is used.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import StudyConfig
    from ..outputs import Shapes
    from .space import SearchSpace

__all__ = ["space_for_models", "space_for_study", "ModelWeightRange", "MAX_STUDENTS"]

#: at most this many candidate students are probed (besides every option's midpoint)
MAX_STUDENTS = 32


def _shape_aware(loss: str) -> bool:
    from ..losses import LOSSES
    from ..losses.base import DistillLoss

    return LOSSES.get(loss).weight_scale.__func__ is not DistillLoss.weight_scale.__func__


def _unweighted_shape_aware(space: SearchSpace) -> bool:
    return any(c.weight is None and _shape_aware(c.loss) for _, c in space.file.term_choices())


def _student_shapes(space: SearchSpace, num_classes: int, input_shape) -> list[Shapes]:
    from .. import models
    from .students import sample_students

    specs = {s.midpoint().label(): s.midpoint() for s in space.students}
    for c in sample_students(space, MAX_STUDENTS, seed=0):
        specs.setdefault(c.spec().label(), c.spec())
    out = []
    for spec in specs.values():
        try:
            net = models.create(spec.name, num_classes, in_channels=input_shape[0], **spec.kwargs)
        except (ConfigError, ValueError, TypeError, RuntimeError):  # such a candidate fails in its own trial
            continue
        out.append(models.shapes(net, tuple(input_shape)))
    return out


def _pair_sets(spec: Any, teacher: Shapes, student: Shapes) -> list[Any]:
    """Every pairs argument the loss may receive for this student: ``[None]`` (its default) without pairs."""
    from ..pairs import auto_pairs, depth_pairs

    if spec is None:
        return [None]
    if spec == "auto":
        return [auto_pairs(teacher, student)]
    if isinstance(spec, list):
        return [[tuple(p) for p in spec]]
    if not teacher.num_stages or not student.num_stages:
        return [None]
    depths = [float(d) for d in spec.depths]
    subsets = itertools.chain.from_iterable(itertools.combinations(depths, n) for n in range(1, spec.max + 1))
    return [depth_pairs(teacher, student, d) for d in subsets]


class ModelWeightRange:
    """``weight_range(loss, pairs) -> (low, high)`` for a teacher and candidate students (probed shapes): the
    union of ``weight_range_for`` over the students and the pair sets the ``pairs`` spec allows; a scale-1 loss,
    or no student, keeps the loss's ``weight_range``. Plain data, so a space holding it pickles."""

    def __init__(self, teacher: Shapes, students: list[Shapes]) -> None:
        self.teacher, self.students = teacher, list(students)

    def __call__(self, loss: str, pairs: Any) -> tuple[float, float]:
        from ..losses import LOSSES

        cls = LOSSES.get(loss)
        if not _shape_aware(loss) or not self.students:
            return float(cls.weight_range[0]), float(cls.weight_range[1])
        t = self.teacher
        ranges = [cls.weight_range_for(s, t, p) for s in self.students for p in _pair_sets(pairs, t, s)]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)


def space_for_models(space: SearchSpace, teacher: Shapes, num_classes: int, input_shape) -> SearchSpace:
    """``space`` with the default weight range of its unweighted terms following the study's models:
    ``teacher`` (its probed shapes) and the space's candidate students built for ``num_classes`` classes and
    inputs of ``input_shape`` (C, H, W). The space itself when no such term has a shape-dependent weight."""
    if not _unweighted_shape_aware(space):
        return space
    students = _student_shapes(space, num_classes, input_shape)
    return space.with_weight_range(ModelWeightRange(teacher, students))


def space_for_study(space: SearchSpace, cfg: StudyConfig, data=None) -> SearchSpace:
    """:func:`space_for_models` on a study's models: its teacher's architecture (probed, never trained) and its
    data (``data``: the study's built data, else built from ``cfg.data``)."""
    if not _unweighted_shape_aware(space):
        return space
    from .. import models

    data = data if data is not None else cfg.data.create(cfg.base_dir)
    probe = models.from_spec(cfg.teacher, data.num_classes, data.input_shape[0])
    return space_for_models(space, models.shapes(probe, tuple(data.input_shape)), data.num_classes,
                            data.input_shape)
