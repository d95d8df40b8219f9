"""Low-fidelity training data: a fixed random subset of a bundle's training split (Auto-KD's sparse training
of candidates, Li et al., ICCV 2023: a search evaluates each candidate on part of the data)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import Subset

from ..errors import ConfigError
from .base import DataBundle, split_fingerprint
from .loading import ArrayDataset
from .splits import stratified_subset

__all__ = ["train_subset"]


def _labels(ds) -> np.ndarray | None:
    targets = getattr(ds, "targets", None)
    if targets is None:
        return None
    return np.asarray(torch.as_tensor(targets).cpu().numpy() if isinstance(targets, torch.Tensor) else targets)


def _pick(ds, sel: np.ndarray):
    if isinstance(ds, ArrayDataset):
        t = torch.from_numpy(sel)
        return ArrayDataset(ds.x[t], ds.y[t], transform=ds.transform, augment=ds.augment)
    return Subset(ds, sel.tolist())


def train_subset(bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
    """``bundle`` with its training split (and ``train_eval``, in the same order) cut to a ``fraction`` of its
    samples: stratified by class when the dataset exposes ``targets``, else uniform; fixed by ``seed``.
    Validation and test splits are unchanged. ``fraction == 1`` returns ``bundle`` itself."""
    if isinstance(fraction, bool) or not 0 < float(fraction) <= 1:
        raise ConfigError(f"search.fidelity.data_fraction must be in (0, 1] (got {fraction!r})")
    if float(fraction) == 1.0:
        return bundle
    n = len(bundle.train)
    labels = _labels(bundle.train)
    if labels is not None and len(labels) == n:
        sel = stratified_subset(np.arange(n), labels, float(fraction), seed)
    else:
        g = torch.Generator().manual_seed(int(seed))
        sel = np.sort(torch.randperm(n, generator=g)[: max(1, round(n * float(fraction)))].numpy())
    train = _pick(bundle.train, sel)
    train_eval = train if bundle.train_eval is bundle.train else _pick(bundle.train_eval, sel)
    if isinstance(train, ArrayDataset) and isinstance(train_eval, ArrayDataset) and train is not train_eval:
        train_eval = ArrayDataset(train.x, train.y)  # share the tensors; no augmentation
    info = dict(bundle.info)
    info["fidelity"] = {"data_fraction": float(fraction), "seed": int(seed), "rows": len(sel)}
    info["sizes"] = {**info.get("sizes", {}), "train": len(sel)}
    info["fingerprint"] = split_fingerprint(bundle.name, {"train_subset": sel},
                                            parent=bundle.info.get("fingerprint"), fraction=float(fraction))
    return dataclasses.replace(bundle, train=train, train_eval=train_eval, info=info)
