"""``create(name, ...)``: validate the common data settings and call the registered builder."""

from __future__ import annotations

import inspect
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import DATASETS, DataBundle
from .splits import check_fractions, check_seed

__all__ = ["create", "names", "options"]

_COMMON = ("root", "seed", "val_fraction", "test_fraction", "train_fraction", "download")


def names() -> list[str]:
    """Registered dataset names."""
    return DATASETS.names()


def options(name: str) -> dict[str, Any]:
    """Dataset-specific keyword options of ``name`` and their defaults."""
    sig = inspect.signature(DATASETS.get(name, where="data.name"))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in _COMMON and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def create(
    name: str,
    *,
    root: str | PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
    **kw: Any,
) -> DataBundle:
    """Build dataset ``name`` split by ``seed``; ``kw`` are dataset-specific options (see :func:`options`).

    Raises ``UnknownNameError`` (name), ``ConfigError`` (bad setting) or ``DataError`` (files).
    """
    key = DATASETS.canonical(name, where="data.name")
    val, test, train = check_fractions(val_fraction, test_fraction, train_fraction)
    seed = check_seed(seed)
    if not isinstance(download, bool):
        raise ConfigError(f"data.download must be true or false (got {download!r})")
    if root is not None and not isinstance(root, str | PathLike):
        raise ConfigError(f"data.root must be a path (got {root!r})")
    allowed = options(key)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"data.{unknown[0]}: unknown option for dataset {key!r} "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    path = None if root is None or str(root) == "" else Path(root).expanduser()
    return DATASETS.get(key)(
        root=path,
        seed=seed,
        val_fraction=val,
        test_fraction=test,
        train_fraction=train,
        download=download,
        **kw,
    )
