"""Training: fit recipes (:class:`Trainer`), obtain teachers and supply their outputs."""

from __future__ import annotations

from .checks import check_recipe
from .source_modes import make_teacher_source, parse_teacher_cache
from .sources import CachedTeacher, OnlineTeacher, TeacherSource
from .teacher import load_checkpoint, obtain_teacher
from .trainer import FitResult, Trainer, TrainingDiverged, evaluate, measure_model, resolve_device
from .views import ViewsTeacher

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
    "ViewsTeacher",
    "make_teacher_source",
    "parse_teacher_cache",
    "obtain_teacher",
    "load_checkpoint",
]
