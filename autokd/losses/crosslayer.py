"""Cross-layer feature distillation (assignment, review, attention reconstruction)."""

from __future__ import annotations

__all__: list[str] = []
