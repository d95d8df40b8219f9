"""cifar10 / cifar100 from a fake on-disk layout in the official python-pickle format (no network)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from autokd import data
from autokd.errors import ConfigError, DataError


def _write(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _batch(rng: np.random.Generator, n: int, num_classes: int, label_key: bytes) -> dict:
    labels = [i % num_classes for i in range(n)]
    rng.shuffle(labels)
    return {
        b"batch_label": b"fake",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: labels,
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def make_cifar10(root: Path, per_batch: int = 40, n_test: int = 30) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write(d / f"data_batch_{i}", _batch(rng, per_batch, 10, b"labels"))
    _write(d / "test_batch", _batch(rng, n_test, 10, b"labels"))
    _write(d / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072})
    return d


def make_cifar100(root: Path, n_train: int = 400, n_test: int = 100) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = _batch(rng, n, 100, b"fine_labels")
        batch[b"coarse_labels"] = [y // 5 for y in batch[b"fine_labels"]]
        _write(d / name, batch)
    _write(
        d / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": []}
    )
    return d


def test_cifar10_fake_layout(tmp_path):
    folder = make_cifar10(tmp_path)
    b = data.create("cifar10", root=tmp_path, seed=0, val_fraction=0.25)
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32) and b.deterministic_train is False
    assert b.sizes == {"train": 150, "val": 50, "test": 30}
    assert b.info["source"] == str(folder) and b.info["test_fraction"] is None
    assert b.info["classes"] == [f"c{i}" for i in range(10)]
    x, y = b.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    # val is stratified: 5 per class
    assert np.bincount(b.val.targets, minlength=10).tolist() == [5] * 10

    # eval transform = ToTensor + Normalize of the stored pixels, exactly
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)
    first = torch.tensor(raw[b"data"][0], dtype=torch.float32).view(3, 32, 32) / 255
    mean, std = torch.tensor(b.info["normalize"]["mean"]), torch.tensor(b.info["normalize"]["std"])
    expected = (first - mean[:, None, None]) / std[:, None, None]
    tx, ty = b.test[0]
    assert torch.allclose(tx, expected, atol=1e-5) and ty == raw[b"labels"][0]

    # train_eval = train samples with the eval transform (deterministic); train is augmented
    assert len(b.train_eval) == len(b.train)
    assert torch.equal(b.train_eval[3][0], b.train_eval[3][0])
    torch.manual_seed(0)
    augmented = [b.train[3][0] for _ in range(6)]
    assert any(not torch.equal(a, b.train_eval[3][0]) for a in augmented)
    assert all(b.train[3][1] == b.train_eval[3][1] for _ in range(2))

    # loaders: DataLoader path with (x, y, idx)
    loader = b.loader("train", 32, seed=1)
    assert isinstance(loader, data.EpochDataLoader) and len(loader) == 5
    x, y, idx = next(iter(loader))
    assert x.shape == (32, 3, 32, 32) and y.dtype == torch.int64 and idx.dtype == torch.int64
    assert all(int(y[i]) == b.train[int(idx[i])][1] for i in range(32))
    xe, _, idxe = next(iter(b.loader("test", 8)))
    assert torch.equal(idxe, torch.arange(8)) and torch.allclose(xe[0], expected, atol=1e-5)


def test_cifar_splits_seeded(tmp_path):
    make_cifar10(tmp_path)
    a = data.create("cifar10", root=tmp_path, seed=0)
    again = data.create("cifar10", root=tmp_path, seed=0)
    other = data.create("cifar10", root=tmp_path, seed=1)
    assert np.array_equal(a.val.indices, again.val.indices)
    assert a.info["fingerprint"] == again.info["fingerprint"] != other.info["fingerprint"]
    assert not np.array_equal(a.val.indices, other.val.indices)
    assert not set(a.train.indices) & set(a.val.indices)
    assert len(set(a.train.indices) | set(a.val.indices)) == 200
    small = data.create("cifar10", root=tmp_path, seed=0, train_fraction=0.5)
    assert set(small.train.indices) <= set(a.train.indices) and len(small.train) == len(a.train) // 2
    assert np.array_equal(small.val.indices, a.val.indices)


def test_cifar_root_may_be_the_batches_folder(tmp_path):
    folder = make_cifar10(tmp_path)
    b = data.create("cifar10", root=folder, val_fraction=0.25)
    assert b.sizes["test"] == 30


def test_cifar100_fake_layout(tmp_path):
    make_cifar100(tmp_path)
    b = data.create("cifar100", root=str(tmp_path), seed=0, val_fraction=0.25)
    assert b.num_classes == 100 and b.input_shape == (3, 32, 32)
    assert b.sizes == {"train": 300, "val": 100, "test": 100}
    assert b.info["classes"][:2] == ["f0", "f1"]
    x, y = b.val[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 100


def test_cifar_missing_files_message(tmp_path):
    with pytest.raises(DataError) as ei:
        data.create("cifar100", root=tmp_path / "nowhere")
    msg = str(ei.value)
    assert str(tmp_path / "nowhere") in msg and "cifar-100-python/" in msg
    assert "data.download: true" in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"CIFAR-10 not found under .*cifar-10-batches-py/"):
        data.create("cifar10", root=tmp_path)


def test_cifar_requires_root():
    with pytest.raises(ConfigError, match="data.root is required for cifar10"):
        data.create("cifar10")


def test_cifar_str_keys(tmp_path):
    """Python-2 pickles (the official files) load with str keys under encoding='latin1'."""
    folder = make_cifar10(tmp_path)
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            obj = pickle.load(fh)
        _write(f, {k.decode(): v for k, v in obj.items()})
    b = data.create("cifar10", root=tmp_path, val_fraction=0.25)
    assert b.sizes["test"] == 30 and b.info["classes"][0] == "c0"


def test_cifar_corrupt_file(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        data.create("cifar10", root=tmp_path)
