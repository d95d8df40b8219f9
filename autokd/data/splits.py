"""Validation of split settings and seeded, stratified index splits (sklearn ``train_test_split``).

All returned index arrays are sorted int64, so split datasets keep the source order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["check_fractions", "check_seed", "carve", "stratified_split", "stratified_subset"]


def _fraction(field: str, value: Any, *, allow_one: bool = False) -> float:
    upper = "1]" if allow_one else "1)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be a number in (0, {upper} (got {value!r})")
    v = float(value)
    if not (0.0 < v < 1.0 or (allow_one and v == 1.0)):
        raise ConfigError(f"{field} must be in (0, {upper} (got {value!r})")
    return v


def check_fractions(val_fraction: Any, test_fraction: Any, train_fraction: Any) -> tuple[float, float, float]:
    """Validated ``(val, test, train)`` fractions; val/test in (0, 1) with val + test < 1, train in (0, 1]."""
    val = _fraction("data.val_fraction", val_fraction)
    test = _fraction("data.test_fraction", test_fraction)
    train = _fraction("data.train_fraction", train_fraction, allow_one=True)
    if val + test >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction must be < 1 (got {val} + {test} = {val + test:g})"
        )
    return val, test, train


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**32:
        raise ConfigError(f"data.seed must be an integer in [0, 2**32) (got {seed!r})")
    return int(seed)


def _tts(
    idx: np.ndarray, labels: np.ndarray, size: float, seed: int, what: str, *, keep_size: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    sizes = {"train_size": size} if keep_size else {"test_size": size}
    try:
        keep, out = train_test_split(idx, stratify=labels[idx], random_state=seed, **sizes)
    except ValueError as e:
        n_cls = len(np.unique(labels[idx]))
        raise ConfigError(
            f"{what}: cannot split {len(idx)} samples of {n_cls} classes stratified (too few samples?): {e}"
        ) from e
    return np.sort(keep).astype(np.int64), np.sort(out).astype(np.int64)


def carve(
    idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into ``(rest, carved)`` with ``carved`` ≈ ``fraction`` of it, stratified by ``labels[idx]``."""
    return _tts(np.asarray(idx, dtype=np.int64), np.asarray(labels), fraction, seed, what)


def stratified_split(
    labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` indices: first test_fraction of all, then val_fraction of all from the rest."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels), dtype=np.int64)
    rest, test = carve(idx, labels, test_fraction, seed, f"data.test_fraction={test_fraction:g}")
    val_size = val_fraction / (1.0 - test_fraction)
    train, val = carve(rest, labels, val_size, seed, f"data.val_fraction={val_fraction:g}")
    return train, val, test


def stratified_subset(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified ``fraction`` of ``idx`` (``idx`` itself when ``fraction == 1``)."""
    if fraction >= 1.0:
        return np.sort(np.asarray(idx, dtype=np.int64))
    subset, _ = _tts(
        np.asarray(idx, dtype=np.int64),
        np.asarray(labels),
        fraction,
        seed,
        f"data.train_fraction={fraction:g}",
        keep_size=True,
    )
    return subset
