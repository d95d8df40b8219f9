"""Factor Transfer (paraphraser / translator)."""

from __future__ import annotations

__all__: list[str] = []
