"""Training: fit recipes (:class:`Trainer`), obtain teachers and supply their outputs."""

from __future__ import annotations

from .teacher import CachedTeacher, OnlineTeacher, TeacherSource, make_teacher_source, obtain_teacher
from .trainer import FitResult, Trainer, TrainingDiverged, evaluate, measure_model, resolve_device

__all__ = [
    "Trainer",
    "FitResult",
    "TrainingDiverged",
    "evaluate",
    "measure_model",
    "resolve_device",
    "TeacherSource",
    "OnlineTeacher",
    "CachedTeacher",
    "make_teacher_source",
    "obtain_teacher",
]
