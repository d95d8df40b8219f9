"""The dataset registry and :class:`DataBundle`, what every dataset builder returns."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..registry import Registry
from .loading import BatchIterator, EpochDataLoader, make_loader

__all__ = ["DATASETS", "DataBundle", "SPLITS", "split_fingerprint"]

#: Builders ``fn(*, root, seed, val_fraction, test_fraction, train_fraction, download, **options)
#: -> DataBundle``; metadata ``description=...``. Use :func:`autokd.data.create` to call them.
DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")

SPLITS = ("train", "val", "test", "train_eval")


@dataclass
class DataBundle:
    """Train/val/test splits of one dataset plus what models and caches need to know about them.

    Items of every split are ``(x: FloatTensor[C,H,W], y: int)`` — or ``(x: LongTensor[seq_len], y)`` token
    ids for text data, whose ``input_shape`` is ``(seq_len,)``. ``train`` uses the train transform,
    the others the eval transform; ``train_eval`` is ``train``'s samples (same order) with the eval
    transform. ``deterministic_train`` means ``train`` has no augmentation (teacher outputs over it can
    be cached once, keyed by ``info["fingerprint"]``).
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W) images, (seq_len,) token sequences
    deterministic_train: bool
    train_eval: Dataset
    info: dict[str, Any] = field(default_factory=dict)

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(repr(s) for s in SPLITS)} (got {split!r})")
        return getattr(self, split)

    @property
    def sizes(self) -> dict[str, int]:
        return {s: len(self.dataset(s)) for s in ("train", "val", "test")}  # type: ignore[arg-type]

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        device: torch.device | str | None = None,
    ) -> BatchIterator | EpochDataLoader:
        """Batches ``(x, y, idx)`` of ``split``; ``shuffle`` defaults to True for ``"train"`` only.

        Create the loader once and iterate it once per epoch: each ``iter()`` advances the epoch.
        """
        ds = self.dataset(split)
        if shuffle is None:
            shuffle = split == "train"
        return make_loader(ds, batch_size, shuffle, seed, drop_last, num_workers, device=device)

    def __repr__(self) -> str:
        return (
            f"DataBundle({self.name!r}, sizes={self.sizes}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, deterministic_train={self.deterministic_train})"
        )


def split_fingerprint(name: str, splits: dict[str, Sequence[int] | np.ndarray], **extra: Any) -> str:
    """Short stable hash of a dataset's split indices (+ settings): a cache key for teacher outputs."""
    h = hashlib.sha1(name.encode())
    for key in sorted(extra):
        h.update(f"|{key}={extra[key]!r}".encode())
    for key in sorted(splits):
        h.update(f"|{key}:".encode())
        h.update(np.asarray(splits[key], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
