"""digits / fake datasets, split settings and create() validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autokd import data
from autokd.errors import ConfigError, UnknownNameError


@pytest.fixture(scope="module")
def digits() -> data.DataBundle:
    return data.create("digits", seed=0)


def _labels(ds: data.ArrayDataset) -> np.ndarray:
    return ds.y.numpy()


def test_registry_contract():
    assert isinstance(data.DATASETS, type(data.DATASETS))
    assert data.DATASETS.kind == "dataset"
    assert set(data.names()) >= {"digits", "fake", "cifar10", "cifar100", "imagefolder"}
    for name in data.names():
        assert data.DATASETS.meta(name)["description"]
    for sym in (
        "DATASETS",
        "create",
        "names",
        "DataBundle",
        "ArrayDataset",
        "IndexedDataset",
        "make_loader",
        "BatchIterator",
    ):
        assert sym in data.__all__


def test_digits_bundle_shape(digits):
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert digits.deterministic_train is True
    x, y = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    assert digits.train_eval is digits.train
    assert digits.info["seed"] == 0 and digits.info["source"] == "sklearn.datasets.load_digits"
    assert digits.info["sizes"] == digits.sizes
    assert isinstance(digits.info["fingerprint"], str)


def test_digits_sizes_cover_and_disjoint(digits):
    sizes = digits.sizes
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.15 * 1797, abs=2)
    assert sizes["val"] == pytest.approx(0.15 * 1797, abs=2)
    # the bundle is the data at the indices of stratified_split (which the builder uses)
    from sklearn.datasets import load_digits

    from autokd.data.splits import stratified_split

    d = load_digits()
    tr, va, te = stratified_split(d.target, 0, 0.15, 0.15)
    assert len(set(tr) | set(va) | set(te)) == 1797
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    for split, idx in (("train", tr), ("val", va), ("test", te)):
        ds = getattr(digits, split)
        assert len(ds) == len(idx)
        assert np.array_equal(_labels(ds), d.target[idx])
        mean, std = digits.info["normalize"]["mean"][0], digits.info["normalize"]["std"][0]
        raw = (ds.x * std + mean).squeeze(1).numpy() * 16
        assert np.allclose(raw, d.images[idx], atol=1e-3)


def test_digits_stratified(digits):
    overall = (
        np.bincount(
            np.concatenate([_labels(getattr(digits, s)) for s in ("train", "val", "test")]), minlength=10
        )
        / 1797
    )
    for split in ("train", "val", "test"):
        p = np.bincount(_labels(getattr(digits, split)), minlength=10) / len(getattr(digits, split))
        assert np.abs(p - overall).max() < 0.02, split


def test_digits_deterministic_and_seed_dependent(digits):
    again = data.create("digits", seed=0)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(again, split).x, getattr(digits, split).x)
        assert torch.equal(getattr(again, split).y, getattr(digits, split).y)
    assert again.info["fingerprint"] == digits.info["fingerprint"]
    other = data.create("digits", seed=1)
    assert other.info["fingerprint"] != digits.info["fingerprint"]
    assert not torch.equal(other.test.y, digits.test.y) or not torch.equal(other.test.x, digits.test.x)


def test_digits_train_fraction_is_stratified_subset(digits):
    small = data.create("digits", seed=0, train_fraction=0.2)
    assert small.sizes["val"] == digits.sizes["val"] and small.sizes["test"] == digits.sizes["test"]
    assert len(small.train) == pytest.approx(0.2 * len(digits.train), abs=2)
    # same val/test samples; the small train set is a subset of the full one (compare raw pixels)
    raw_full = digits.train.x * digits.info["normalize"]["std"][0] + digits.info["normalize"]["mean"][0]
    raw_small = small.train.x * small.info["normalize"]["std"][0] + small.info["normalize"]["mean"][0]
    full_rows = {tuple(np.round(r.numpy().ravel() * 16).astype(int)) for r in raw_full}
    small_rows = [tuple(np.round(r.numpy().ravel() * 16).astype(int)) for r in raw_small]
    assert all(r in full_rows for r in small_rows)
    overall = np.bincount(_labels(digits.train), minlength=10) / len(digits.train)
    p = np.bincount(_labels(small.train), minlength=10) / len(small.train)
    assert np.abs(p - overall).max() < 0.02


def test_digits_normalised_with_train_stats(digits):
    x = digits.train.x
    assert abs(float(x.mean())) < 1e-4
    assert float(x.std(correction=0)) == pytest.approx(1.0, abs=1e-4)
    mean, std = digits.info["normalize"]["mean"][0], digits.info["normalize"]["std"][0]
    raw_val = digits.val.x * std + mean  # raw values are k/16 in [0, 1]
    assert float(raw_val.min()) > -1e-5 and float(raw_val.max()) < 1 + 1e-5
    assert torch.allclose(raw_val * 16, (raw_val * 16).round(), atol=1e-3)
    assert abs(float(digits.val.x.mean())) > 1e-6  # not re-normalised with its own stats


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"test_fraction": -0.1}, "data.test_fraction"),
        ({"test_fraction": "a"}, "data.test_fraction"),
        ({"train_fraction": 0.0}, "data.train_fraction"),
        ({"train_fraction": 1.5}, "data.train_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction"),
        ({"seed": -1}, "data.seed"),
        ({"seed": 1.5}, "data.seed"),
        ({"download": "yes"}, "data.download"),
        ({"image_size": 8}, "data.image_size"),
        ({"train_fraction": 0.001}, "data.train_fraction"),
    ],
)
def test_create_rejects_bad_settings(kwargs, field):
    with pytest.raises(ConfigError) as ei:
        data.create("digits", **kwargs)
    msg = str(ei.value)
    assert field in msg and "\n" not in msg


def test_unknown_option_lists_allowed():
    with pytest.raises(
        ConfigError, match=r"data.colour: unknown option for dataset 'fake' \(allowed: .*channels"
    ):
        data.create("fake", colour=3)


def test_unknown_dataset():
    with pytest.raises(UnknownNameError) as ei:
        data.create("digitz")
    assert "data.name" in str(ei.value) and "'digits'" in str(ei.value)


def test_fake_learnable_and_deterministic():
    b = data.create("fake", seed=3)
    assert b.input_shape == (1, 8, 8) and b.num_classes == 10 and b.deterministic_train
    assert sum(b.sizes.values()) == 400
    means = torch.stack([b.train.x[b.train.y == c].mean(0) for c in range(10)])
    d = ((b.test.x[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (d.argmin(1) == b.test.y).float().mean() > 0.8
    again = data.create("fake", seed=3)
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y)
    assert not torch.equal(data.create("fake", seed=4).train.x[:5], b.train.x[:5])


def test_fake_options():
    b = data.create("fake", num_classes=4, image_size=32, channels=3, n=80, seed=1)
    assert b.input_shape == (3, 32, 32) and b.num_classes == 4
    assert b.train[0][0].shape == (3, 32, 32)
    assert set(b.train.y.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ConfigError, match="data.channels must be 1 or 3"):
        data.create("fake", channels=2)
    with pytest.raises(ConfigError, match="data.n must be"):
        data.create("fake", n=5)
