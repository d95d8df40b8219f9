"""Jacobian (input-gradient) matching."""

from __future__ import annotations

__all__: list[str] = []
