"""Validation of split settings and seeded, stratified index splits.

The splits are exactly scikit-learn's ``train_test_split(idx, stratify=labels[idx], random_state=seed)``
(``StratifiedShuffleSplit``: the same sizes, the same draws from the same ``RandomState``, so studies made
with it keep their splits; tested against scikit-learn), written here because importing scikit-learn costs
every process about 1.3 s of start-up. All returned index arrays are sorted int64, so split datasets keep
the source order.
"""

from __future__ import annotations

import math
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


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws of ``n_draws`` in proportion to ``class_counts``: the floors, then one more for the
    largest remainders, ties broken at random (scikit-learn's ``_approximate_mode``, draw for draw)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def _stratified_positions(y: np.ndarray, n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``y`` of the (train, test) parts: ``StratifiedShuffleSplit``'s first split. Raises
    ``ValueError`` where scikit-learn does (a class with one member; fewer draws than classes)."""
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if np.min(class_counts) < 2:
        raise ValueError(f"classes {classes[class_counts < 2].tolist()} have only 1 member")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"{min(n_train, n_test)} samples cannot hold all {len(classes)} classes")
    class_indices = np.split(np.argsort(y_indices.reshape(-1), kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        members = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(members[: n_i[i]])
        test.extend(members[n_i[i] : n_i[i] + t_i[i]])
    # (scikit-learn then shuffles both parts with further draws: the parts themselves are fixed here)
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _tts(
    idx: np.ndarray, labels: np.ndarray, size: float, seed: int, what: str, *, keep_size: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, out)``: ``out`` is the ``size`` fraction of ``idx`` (``keep`` with ``keep_size``), stratified
    by ``labels[idx]``; sizes as scikit-learn rounds them (the test part rounded up, the train part down)."""
    n = len(idx)
    if keep_size:
        n_train = math.floor(size * n)
        n_test = n - n_train
    else:
        n_test = math.ceil(size * n)
        n_train = n - n_test
    y = labels[idx]
    try:
        if not 0 < size < 1 or n_train <= 0 or n_test <= 0:
            raise ValueError(f"a fraction of {size:g} leaves an empty part")
        keep, out = _stratified_positions(y, n_train, n_test, seed)
    except ValueError as e:
        n_cls = len(np.unique(y))
        raise ConfigError(
            f"{what}: cannot split {n} samples of {n_cls} classes stratified (too few samples?): {e}"
        ) from e
    return np.sort(idx[keep]).astype(np.int64), np.sort(idx[out]).astype(np.int64)


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
