"""Domain exceptions. The CLI catches :class:`AutoKDError` and prints one clean line (exit code 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AutoKDError",
    "ConfigError",
    "UnknownNameError",
    "DataError",
    "CheckpointError",
    "close_matches",
]


class AutoKDError(Exception):
    """Base class of every error caused by a user's input (config, names, files)."""


class ConfigError(AutoKDError, ValueError):
    """A configuration value is invalid. The message names the file/field and what is allowed."""


class DataError(AutoKDError):
    """A dataset cannot be loaded (missing files, bad layout)."""


class CheckpointError(AutoKDError):
    """A checkpoint cannot be loaded into the requested architecture."""


def close_matches(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    known = list(known)
    return difflib.get_close_matches(str(name), known, n=n, cutoff=0.5)


class UnknownNameError(AutoKDError, KeyError):
    """A registry lookup failed; the message lists close matches and the known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str], where: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        matches = close_matches(name, self.known)
        prefix = f"{where}: " if where else ""
        msg = f"{prefix}unknown {kind} {name!r}"
        if matches:
            msg += f"; did you mean {', '.join(repr(m) for m in matches)}?"
        shown = self.known if len(self.known) <= 40 else self.known[:40] + ["..."]
        plural = kind + ("es" if kind.endswith("s") else "s")
        msg += f" (known {plural}: {', '.join(shown)})"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message
