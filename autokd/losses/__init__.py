"""Distillation losses. Add one by writing a :class:`DistillLoss` subclass decorated with ``@register``
in a module imported below; tests parametrised over :func:`names` cover it automatically."""

from __future__ import annotations

from typing import Any

from ..outputs import Shapes

# importing each module registers its losses
from . import (  # noqa: F401
    classifier,
    contrastive,
    crosslayer,
    embedding,
    factor,
    feature,
    frequency,
    jacobian,
    logit,
    primitives,
    projection,
    quantization,
    ranking,
    relation,
    svd,
    vit,
)
from .base import LOSSES, DistillLoss, HParam, Pairs, register

__all__ = ["LOSSES", "DistillLoss", "HParam", "register", "create", "names", "get"]


def get(name: str) -> type[DistillLoss]:
    return LOSSES.get(name)


def names() -> list[str]:
    return LOSSES.names()


def create(
    name: str,
    *,
    student: Shapes | None = None,
    teacher: Shapes | None = None,
    pairs: Pairs | None = None,
    **hparams: Any,
) -> DistillLoss:
    """Build the loss registered as ``name`` (raises ``UnknownNameError`` with close matches)."""
    cls = LOSSES.get(name)
    return cls(student=student, teacher=teacher, pairs=pairs, **hparams)
