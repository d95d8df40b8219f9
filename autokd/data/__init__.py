"""Datasets for autokd: a registry of builders returning :class:`DataBundle` (train/val/test + loaders).

>>> from autokd import data
>>> b = data.create("digits", seed=0, train_fraction=0.5)
>>> for x, y, idx in b.loader("train", 64): ...

Registered: ``digits`` (default, embedded), ``fake`` (synthetic), ``cifar10``, ``cifar100``,
``imagefolder``, and ``fake_text`` (generated token sequences for text models). Nothing is downloaded unless
``download=True``.
"""

from __future__ import annotations

from . import arrays, cifar, imagefolder, text  # noqa: F401  (register the builders)
from .base import DATASETS, SPLITS, DataBundle
from .factory import create, names, options
from .fidelity import train_subset
from .loading import ArrayDataset, BatchIterator, EpochDataLoader, IndexedDataset, make_loader

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataBundle",
    "ArrayDataset",
    "IndexedDataset",
    "BatchIterator",
    "EpochDataLoader",
    "make_loader",
    "create",
    "names",
    "options",
    "train_subset",
]
