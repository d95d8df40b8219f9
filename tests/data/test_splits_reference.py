"""The stratified splits are scikit-learn's ``train_test_split(..., stratify=...)`` exactly (the same parts for
the same seed: studies made with it keep their data), and digits is scikit-learn's ``load_digits`` -- without
importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from autokd.data.arrays import _sklearn_digits
from autokd.data.splits import _tts, carve, stratified_split, stratified_subset
from autokd.errors import ConfigError


def _reference(idx, labels, size, seed, keep_size):
    sizes = {"train_size": size} if keep_size else {"test_size": size}
    keep, out = train_test_split(idx, stratify=labels[idx], random_state=seed, **sizes)
    return np.sort(keep), np.sort(out)


@pytest.mark.parametrize("case", range(60))
def test_the_parts_are_scikit_learns(case):
    rng = np.random.default_rng(case)
    n_classes = int(rng.integers(2, 12))
    if case % 3 == 0:  # equal class sizes: ties in every remainder, broken by the seeded draws
        labels = np.repeat(np.arange(n_classes), int(rng.integers(3, 40)))
    else:
        labels = rng.choice(n_classes, size=int(rng.integers(60, 900)), p=rng.dirichlet(np.ones(n_classes)))
        labels = labels[np.isin(labels, np.flatnonzero(np.bincount(labels) >= 2))]
    idx = np.sort(rng.choice(len(labels) * 2, size=len(labels), replace=False)) if case % 2 else np.arange(len(labels))
    full = np.zeros(idx.max() + 1, dtype=np.int64)
    full[idx] = labels
    size = float(rng.choice([0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.85]))
    seed = int(rng.integers(0, 2**32))
    for keep_size in (False, True):
        try:
            want = _reference(idx, full, size, seed, keep_size)
        except ValueError:  # too few samples for a stratified split: refused in one line here too
            with pytest.raises(ConfigError, match="cannot split"):
                _tts(idx, full, size, seed, "data.x", keep_size=keep_size)
            continue
        got = _tts(idx, full, size, seed, "data.x", keep_size=keep_size)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        assert got[0].dtype == got[1].dtype == np.int64


def test_the_study_splits_of_digits_are_unchanged():
    labels = load_digits().target
    for seed in (0, 1, 12345):
        train, val, test = stratified_split(labels, seed, 0.15, 0.15)
        rest, want_test = _reference(np.arange(len(labels)), labels, 0.15, seed, False)
        want_train, want_val = _reference(rest, labels, 0.15 / 0.85, seed, False)
        assert np.array_equal(test, want_test) and np.array_equal(val, want_val)
        assert np.array_equal(train, want_train)
        sub = stratified_subset(train, labels, 0.25, seed)
        assert np.array_equal(sub, _reference(train, labels, 0.25, seed, True)[0])
    assert np.array_equal(carve(np.arange(len(labels)), labels, 0.1, 7, "x")[1],
                          _reference(np.arange(len(labels)), labels, 0.1, 7, False)[1])


def test_digits_is_load_digits_without_importing_scikit_learn():
    images, target = _sklearn_digits()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(target, ref.target)
    code = ("import sys; from autokd import data; b = data.create('digits', train_fraction=0.5); "
            "print(len(b.train), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and int(out[0]) > 0
