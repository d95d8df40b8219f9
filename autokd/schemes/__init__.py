"""Training schemes (change the loop, not the loss)."""

from __future__ import annotations

from typing import Any

from .base import SCHEMES, Scheme, make_optimizer, register

__all__ = ["SCHEMES", "Scheme", "register", "create", "names", "make_optimizer"]


def create(name: str, **params: Any) -> Scheme:
    return SCHEMES.get(name, where="scheme.name")(**params)


def names() -> list[str]:
    return SCHEMES.names()
