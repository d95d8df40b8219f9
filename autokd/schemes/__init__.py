"""Training schemes (change the loop, not the loss). Add one by subclassing :class:`Scheme` (override its
hooks) and decorating it with ``@register`` in a module imported below."""

from __future__ import annotations

from typing import Any

from . import (  # noqa: F401  (importing registers the schemes)
    ban,
    dgkd,
    dot,
    ferkd,
    hsakd,
    kcd,
    nasty,
    online,
    peers,
    reskd,
    rocket,
    schedules,
    self_distill,
    sla,
    takd,
    tolerant,
)
from .base import SCHEMES, Scheme, make_optimizer, register
from .dot import DOTOptimizer

__all__ = ["SCHEMES", "Scheme", "register", "create", "names", "get", "make_optimizer", "DOTOptimizer"]


def get(name: str) -> type[Scheme]:
    return SCHEMES.get(name, where="scheme.name")


def create(name: str, **params: Any) -> Scheme:
    return SCHEMES.get(name, where="scheme.name")(**params)


def names() -> list[str]:
    return SCHEMES.names()
