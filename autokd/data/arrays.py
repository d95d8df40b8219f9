"""In-memory datasets: ``digits`` (sklearn, embedded) and ``fake`` (synthetic).

Both are split stratified by ``seed`` (see :func:`~autokd.data.splits.stratified_split`), normalised per
channel with the final train split's mean/std, and served as transform-free :class:`ArrayDataset`
(fast loader path). ``fake`` may augment its training split (``augment: crop_flip``, pad-4 random crop +
horizontal flip as on CIFAR, applied batch-wise on the data's device); then ``deterministic_train=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .augment import make_augment
from .base import DATASETS, DataBundle, split_fingerprint
from .loading import ArrayDataset
from .splits import stratified_split, stratified_subset

__all__ = ["array_bundle", "build_digits", "build_fake"]


def array_bundle(
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    train_fraction: float,
    source: str,
    num_classes: int | None = None,
    extra_info: dict[str, Any] | None = None,
    augment: Any = None,
) -> DataBundle:
    """Split ``x`` (N,C,H,W float) / ``y`` (N,) stratified, normalise with train stats, wrap in a bundle.
    ``augment`` (a batched augmentation) applies to the ``train`` split only; ``train_eval`` shares its
    tensors without it."""
    labels = y.numpy()
    train, val, test = stratified_split(labels, seed, val_fraction, test_fraction)
    train = stratified_subset(train, labels, train_fraction, seed)
    xt = x[torch.from_numpy(train)]
    mean = xt.mean(dim=(0, 2, 3))
    std = xt.std(dim=(0, 2, 3), correction=0).clamp_min(1e-8)
    xn = (x - mean[None, :, None, None]) / std[None, :, None, None]

    def part(idx: np.ndarray) -> ArrayDataset:
        t = torch.from_numpy(idx)
        return ArrayDataset(xn[t].contiguous(), y[t].clone())

    train_eval = part(train)
    train_ds = train_eval if augment is None else ArrayDataset(train_eval.x, train_eval.y, augment=augment)
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    info: dict[str, Any] = {
        "dataset": name,
        "source": source,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "train_fraction": train_fraction,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "total": int(x.shape[0]),
        "normalize": {"mean": mean.tolist(), "std": std.tolist()},
        "fingerprint": split_fingerprint(
            name, {"train": train, "val": val, "test": test}, **(extra_info or {})
        ),
        **(extra_info or {}),
    }
    return DataBundle(
        name=name,
        train=train_ds,
        val=part(val),
        test=part(test),
        num_classes=k,
        input_shape=tuple(int(s) for s in x.shape[1:]),  # type: ignore[arg-type]
        deterministic_train=augment is None,
        train_eval=train_eval,
        info=info,
    )


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 8, 8), target (n,))`` of scikit-learn's digits: the file scikit-learn ships, read as its
    ``load_digits`` reads it, without importing scikit-learn (about 1.3 s of every process's start-up);
    ``load_digits`` itself if the file is not where it used to be."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None:
        raise ConfigError("data.name: digits ships with scikit-learn, which is not installed "
                          "(pip install scikit-learn)")
    for folder in spec.submodule_search_locations or []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


@DATASETS.register(
    "digits",
    description="sklearn's embedded 8x8 handwritten digits (1,797 images, 1x8x8, 10 classes); no download",
)
def build_digits(
    *,
    root: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
) -> DataBundle:
    """The default dataset. ``root``/``download`` are ignored (the data ships with scikit-learn)."""
    images, target = _sklearn_digits()
    x = torch.tensor(np.asarray(images, dtype=np.float32) / 16.0).unsqueeze(1)
    y = torch.tensor(np.asarray(target), dtype=torch.int64)
    return array_bundle(
        "digits",
        x,
        y,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train_fraction=train_fraction,
        source="sklearn.datasets.load_digits",
        num_classes=10,
    )


def _int_option(field: str, value: Any, lo: int, allowed: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < lo:
        raise ConfigError(f"data.{field} must be {allowed or f'an integer >= {lo}'} (got {value!r})")
    return int(value)


@DATASETS.register(
    "fake",
    description="synthetic class-prototype blobs + Gaussian noise (kw num_classes, image_size, channels, n, "
    "noise, augment: none|crop_flip, pad); for tests and benchmarks",
)
def build_fake(
    *,
    root: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
    num_classes: int = 10,
    image_size: int = 8,
    channels: int = 1,
    n: int = 400,
    noise: float = 1.0,
    augment: str = "none",
    pad: int = 4,
) -> DataBundle:
    """Learnable synthetic images: smooth per-class prototypes (unit std) plus ``noise`` * N(0, 1).

    Labels are balanced; everything is drawn from a ``torch.Generator`` seeded by ``seed``. ``augment``:
    ``none`` or ``crop_flip`` (zero-pad by ``pad``, random crop, horizontal flip; training split only).
    """
    aug = make_augment(augment, pad=pad)
    k = _int_option("num_classes", num_classes, 2)
    size = _int_option("image_size", image_size, 2)
    n = _int_option("n", n, 2 * k, f"an integer >= 2 * num_classes = {2 * k}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"data.channels must be 1 or 3 (got {channels!r})")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
        raise ConfigError(f"data.noise must be a number >= 0 (got {noise!r})")

    g = torch.Generator().manual_seed(seed)
    low = max(2, size // 2)
    protos = F.interpolate(
        torch.randn(k, channels, low, low, generator=g),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )
    flat = protos.flatten(1)
    protos = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-8)).view_as(protos)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    x = protos[y] + float(noise) * torch.randn(n, channels, size, size, generator=g)
    return array_bundle(
        "fake",
        x,
        y,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train_fraction=train_fraction,
        source="synthetic",
        num_classes=k,
        extra_info={
            "num_classes": k,
            "image_size": size,
            "channels": channels,
            "n": n,
            "noise": float(noise),
            **(aug.describe() if aug is not None else {}),
        },
        augment=aug,
    )
