"""Methods that reuse the teacher's classifier."""

from __future__ import annotations

__all__: list[str] = []
