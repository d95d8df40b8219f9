"""Loaders: (x, y, idx) batches, seeded epochs, drop_last, fast path == DataLoader path."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from autokd import data
from autokd.errors import ConfigError


@pytest.fixture(scope="module")
def digits() -> data.DataBundle:
    return data.create("digits", seed=0)


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_batches_point_to_samples(digits):
    loader = digits.loader("train", 100, seed=5)
    assert isinstance(loader, data.BatchIterator)
    seen = []
    for x, y, idx in loader:
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and idx.dtype == torch.int64
        for i in range(len(idx)):
            xi, yi = digits.train[idx[i]]
            assert torch.equal(xi, x[i]) and yi == int(y[i])
        seen.append(idx)
    allidx = torch.cat(seen)
    assert sorted(allidx.tolist()) == list(range(len(digits.train)))  # a permutation, no repeats
    assert not torch.equal(allidx, torch.arange(len(digits.train)))  # train shuffles by default


def test_epoch_order_contract(digits):
    n = len(digits.train)
    loader = digits.loader("train", 64, seed=7)
    e0 = torch.cat([b[2] for b in loader])
    e1 = torch.cat([b[2] for b in loader])
    assert not torch.equal(e0, e1)
    for e, order in ((0, e0), (1, e1)):
        expected = torch.randperm(n, generator=torch.Generator().manual_seed(7 * 1000003 + e))
        assert torch.equal(order, expected)
    fresh = digits.loader("train", 64, seed=7)
    assert torch.equal(torch.cat([b[2] for b in fresh]), e0)  # reproducible
    assert torch.equal(torch.cat([b[2] for b in fresh]), e1)
    fresh.set_epoch(0)
    assert torch.equal(torch.cat([b[2] for b in fresh]), e0)
    other = torch.cat([b[2] for b in digits.loader("train", 64, seed=8)])
    assert not torch.equal(other, e0)


def test_eval_splits_unshuffled_by_default(digits):
    for split in ("val", "test", "train_eval"):
        idx = torch.cat([b[2] for b in digits.loader(split, 50)])
        assert torch.equal(idx, torch.arange(len(digits.dataset(split))))
    idx = torch.cat([b[2] for b in digits.loader("train", 50, shuffle=False)])
    assert torch.equal(idx, torch.arange(len(digits.train)))


@pytest.mark.parametrize("fast", [None, False])
def test_len_and_drop_last(digits, fast):
    n = len(digits.val)  # 270
    ds = digits.val
    loader = data.make_loader(ds, 64, True, 0, False, 0, fast=fast)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 5 and len(batches[-1][0]) == n - 4 * 64
    loader = data.make_loader(ds, 64, True, 0, True, 0, fast=fast)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 4 and all(len(b[0]) == 64 for b in batches)
    assert len(data.make_loader(ds, 10, drop_last=True, fast=fast)) == 27


def test_fast_path_equals_dataloader_path(digits):
    fast = data.make_loader(digits.train, 32, True, 11, True, 0)
    slow = data.make_loader(digits.train, 32, True, 11, True, 0, fast=False)
    assert isinstance(fast, data.BatchIterator)
    assert isinstance(slow, DataLoader) and isinstance(slow, data.EpochDataLoader)
    assert len(fast) == len(slow)
    for _ in range(2):  # two epochs
        for (xa, ya, ia), (xb, yb, ib) in zip(fast, slow, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
            assert ya.dtype == yb.dtype == torch.int64 and ia.dtype == ib.dtype == torch.int64


def test_transformed_dataset_uses_dataloader():
    base = data.ArrayDataset(
        torch.arange(20.0).view(20, 1, 1, 1), torch.arange(20) % 2, transform=lambda t: t * 2
    )
    loader = data.make_loader(base, 6, shuffle=True, seed=1)
    assert isinstance(loader, data.EpochDataLoader) and len(loader) == 4
    for x, y, idx in loader:
        assert torch.equal(x.view(-1), idx.float() * 2) and torch.equal(y, idx % 2)
    with pytest.raises(ConfigError):
        data.make_loader(base, 6, fast=True)


def test_dataloader_with_workers_is_reproducible():
    ds = data.ArrayDataset(
        torch.randn(40, 1, 2, 2), torch.arange(40) % 4, transform=lambda t: t + torch.rand(())
    )
    a = [b for b in data.make_loader(ds, 8, True, 3, num_workers=2)]
    b = [b for b in data.make_loader(ds, 8, True, 3, num_workers=2)]
    for (xa, _, ia), (xb, _, ib) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)  # augmentation seeded per epoch in workers


def test_indexed_dataset(digits):
    ids = data.IndexedDataset(digits.val)
    assert len(ids) == len(digits.val)
    x, y, i = ids[5]
    assert i == 5 and torch.equal(x, digits.val[5][0]) and y == digits.val[5][1]
    assert isinstance(data.make_loader(ids, 8), data.BatchIterator)  # unwrapped to the fast path


def test_device_cpu(digits):
    loader = digits.loader("val", 100, device="cpu")
    x, y, idx = next(iter(loader))
    assert x.device.type == "cpu" and idx.device.type == "cpu"
    slow = data.make_loader(digits.val, 100, fast=False, device="cpu")
    xs, _, _ = next(iter(slow))
    assert torch.equal(x, xs)


@pytest.mark.parametrize("split", ["tr", "validation", ""])
def test_bad_split(digits, split):
    with pytest.raises(ConfigError, match=r"split must be one of 'train', 'val', 'test', 'train_eval'"):
        digits.loader(split, 8)


@pytest.mark.parametrize("bs", [0, -1, 2.5, True])
def test_bad_batch_size(digits, bs):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        digits.loader("train", bs)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        data.make_loader(digits.train, bs, fast=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_cuda(digits):
    fast = digits.loader("train", 64, seed=2, device="cuda")
    slow = data.make_loader(digits.train, 64, True, 2, fast=False, device="cuda")
    for (xa, ya, ia), (xb, yb, ib) in zip(fast, slow, strict=True):
        assert xa.is_cuda and ya.is_cuda and ia.is_cuda and xb.is_cuda and yb.is_cuda
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia.cpu(), ib)
