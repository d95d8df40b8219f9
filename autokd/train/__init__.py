"""Training: fit recipes (:class:`Trainer`), obtain teachers and supply their outputs."""

from __future__ import annotations

from .checks import check_recipe
from .sources import CachedTeacher, OnlineTeacher, TeacherSource, make_teacher_source
from .teacher import load_checkpoint, obtain_teacher
from .trainer import FitResult, Trainer, TrainingDiverged, evaluate, measure_model, resolve_device

__all__ = [
    "Trainer",
    "FitResult",
    "TrainingDiverged",
    "check_recipe",
    "evaluate",
    "measure_model",
    "resolve_device",
    "TeacherSource",
    "OnlineTeacher",
    "CachedTeacher",
    "make_teacher_source",
    "obtain_teacher",
    "load_checkpoint",
]
