"""Relation-level distillation terms (sample-to-sample structure)."""

from __future__ import annotations

__all__: list[str] = []
