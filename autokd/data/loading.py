"""In-memory datasets and seeded, epoch-aware loaders that yield ``(x, y, idx)`` batches.

Order contract (both paths): epoch ``e`` of a shuffled loader visits the samples in
``torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000003 + e))`` order; an unshuffled
loader visits ``0..n-1``. Each ``iter(loader)`` consumes one epoch (``set_epoch`` jumps to a given one).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError

__all__ = [
    "ArrayDataset",
    "IndexedDataset",
    "BatchIterator",
    "EpochDataLoader",
    "EpochSampler",
    "epoch_order",
    "make_loader",
]

Batch = tuple[Tensor, Tensor, Tensor]


#: offset of the augmentation's random stream from the shuffling stream of the same epoch
AUGMENT_STREAM = 0x5F3759DF


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1000003 + epoch


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> Tensor:
    """Sample order (int64, CPU) of one epoch."""
    if not shuffle:
        return torch.arange(n, dtype=torch.int64)
    g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


class ArrayDataset(Dataset):
    """Tensors held in memory: items are ``(transform(x[i]) or x[i], int(y[i]))``.

    ``augment`` (e.g. :class:`~autokd.data.augment.CropFlip`) is a batched, parameterised augmentation: the
    fast loader applies it to whole batches on the data's device; a single item draws its view from the
    global torch RNG.
    """

    def __init__(self, x: Tensor, y: Tensor, transform: Callable[[Tensor], Tensor] | None = None,
                 augment: Any = None) -> None:
        x = torch.as_tensor(x)
        y = torch.as_tensor(y).long()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"ArrayDataset: x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.x = x
        self.y = y
        self.transform = transform
        self.augment = augment

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: Any) -> tuple[Tensor, int]:
        i = int(i)
        x = self.x[i]
        if self.augment is not None:
            x = self.augment.apply(x[None], self.augment.sample(1))[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.y[i])

    @property
    def targets(self) -> Tensor:
        return self.y

    def __repr__(self) -> str:
        return (f"ArrayDataset(n={len(self)}, x={tuple(self.x.shape[1:])}, transform={self.transform!r}, "
                f"augment={self.augment!r})")


class IndexedDataset(Dataset):
    """Wraps any ``(x, y)`` dataset so that items are ``(x, y, idx)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: Any) -> tuple[Any, int, int]:
        i = int(i)
        x, y = self.dataset[i][:2]
        return x, int(y), i

    def __repr__(self) -> str:
        return f"IndexedDataset({self.dataset!r})"


def _check_batching(batch_size: Any, num_workers: Any = 0) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer (got {batch_size!r})")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0 (got {num_workers!r})")


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class BatchIterator:
    """Fast path for transform-free :class:`ArrayDataset`: slices the tensors, no per-sample collate.

    ``device`` moves the data there once; batches (including ``idx``) then live on that device. ``augment``
    (a batched augmentation, see :mod:`autokd.data.augment`) is applied to each batch on that device; epoch
    ``e``'s views are drawn per sample from ``torch.Generator().manual_seed(seed * 1000003 + e + AUGMENT_STREAM)``.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        augment: Any = None,
    ) -> None:
        _check_batching(batch_size)
        if device is not None:
            x, y = x.to(device), y.to(device)
        self.x = x
        self.y = y.long()
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.augment = augment
        self._params: Tensor | None = None

    @property
    def num_samples(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return _num_batches(self.num_samples, self.batch_size, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        order = epoch_order(self.num_samples, self.shuffle, self.seed, self.epoch).to(self.x.device)
        self._params = self.epoch_views(self.epoch)
        self.epoch += 1
        return self._batches(order)

    def epoch_views(self, epoch: int) -> Tensor | None:
        """Per-sample view parameters of ``epoch`` (on the data's device), or None without augmentation."""
        if self.augment is None:
            return None
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch) + AUGMENT_STREAM)
        return self.augment.sample(self.num_samples, g).to(self.x.device)

    def _batches(self, order: Tensor) -> Iterator[Batch]:
        bs = self.batch_size
        for b in range(len(self)):
            idx = order[b * bs : (b + 1) * bs]
            x = self.x[idx]
            if self._params is not None:
                x = self.augment.apply(x, self._params[idx])
            yield x, self.y[idx], idx


class EpochSampler(Sampler[int]):
    """Yields :func:`epoch_order` for its current ``epoch``."""

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n = n
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.shuffle, self.seed, self.epoch).tolist())


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: derive numpy/python seeds from the worker's torch seed (set by the loader)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class EpochDataLoader(DataLoader):
    """A :class:`DataLoader` over :class:`IndexedDataset` that advances a seeded epoch on each ``iter()``.

    Worker RNGs (augmentations with ``num_workers > 0``) derive from ``seed * 1000003 + epoch``; with
    ``num_workers=0`` augmentations draw from the global torch RNG.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        _check_batching(batch_size, num_workers)
        indexed = dataset if isinstance(dataset, IndexedDataset) else IndexedDataset(dataset)
        dev = None if device is None else torch.device(device)
        super().__init__(
            indexed,
            batch_size=batch_size,
            sampler=EpochSampler(len(indexed), shuffle, seed),
            drop_last=drop_last,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(_epoch_seed(int(seed), 0)),
            worker_init_fn=seed_worker if num_workers > 0 else None,
            pin_memory=dev is not None and dev.type == "cuda",
        )
        self.seed = int(seed)
        self.epoch = 0
        self.device = dev

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        self.sampler.epoch = self.epoch  # type: ignore[attr-defined]
        self.generator.manual_seed(_epoch_seed(self.seed, self.epoch))  # type: ignore[union-attr]
        self.epoch += 1
        it = super().__iter__()
        if self.device is None:
            return it  # type: ignore[return-value]
        return self._to_device(it)

    def _to_device(self, it: Iterator[Any]) -> Iterator[Batch]:
        nb = self.device.type == "cuda"  # type: ignore[union-attr]
        for x, y, idx in it:
            yield x.to(self.device, non_blocking=nb), y.to(self.device, non_blocking=nb), idx


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    *,
    device: torch.device | str | None = None,
    fast: bool | None = None,
) -> BatchIterator | EpochDataLoader:
    """Loader yielding ``(x, y, idx)`` with ``y``/``idx`` int64; ``len()`` is the number of batches.

    A transform-free :class:`ArrayDataset` (also inside an :class:`IndexedDataset`) gets the
    :class:`BatchIterator` fast path unless ``fast=False``; anything else an :class:`EpochDataLoader`.
    Both paths produce identical batches for the same dataset and seed. ``num_workers`` is ignored on
    the fast path; ``device`` moves batches there (the fast path moves the whole tensors once, so its
    ``idx`` lives on ``device`` too; the DataLoader path keeps ``idx`` on the CPU).
    """
    base = dataset.dataset if isinstance(dataset, IndexedDataset) else dataset
    if fast is not False and isinstance(base, ArrayDataset) and base.transform is None:
        _check_batching(batch_size, num_workers)
        return BatchIterator(
            base.x, base.y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, device=device,
            augment=base.augment,
        )
    if fast:
        raise ConfigError("fast=True needs an ArrayDataset without transform")
    return EpochDataLoader(
        dataset,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        num_workers=num_workers,
        device=device,
    )
