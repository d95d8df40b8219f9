"""``imagefolder``: ``root/train/<class>/<image>`` plus optional ``root/val/`` and ``root/test/``.

Folders are scanned like ``torchvision.datasets.ImageFolder`` (sorted class folders, recursive, same
extensions), but val/test map their class folders onto train's class indices (a val/ missing a class
keeps the labels consistent); a class folder absent from train/ is an error.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import DATASETS, DataBundle, split_fingerprint
from .pil_augment import ImageDataset, ResizedCropFlip, ViewTransform
from .splits import carve, stratified_split, stratified_subset

__all__ = ["ImageFiles", "scan_split", "build_imagefolder", "IMAGENET_MEAN", "IMAGENET_STD"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "train/<class>/<image>, optional val/ and test/ with the same class folders"

Sample = tuple[str, int]


class ImageFiles(ImageDataset):
    """Image files loaded as RGB through ``transform``; items ``(x, label)``."""

    def __init__(self, samples: list[Sample], transform: Any) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def raw(self, i: Any) -> tuple[Any, int]:
        """Item ``i`` before its transform: ``(RGB PIL image, label)``."""
        from PIL import Image

        path, label = self.samples[int(i)]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return img, label

    def image_size(self, i: Any) -> tuple[int, int]:
        """``(width, height)`` of image ``i`` (read from the file's header only)."""
        from PIL import Image

        with Image.open(self.samples[int(i)][0]) as img:
            return img.size

    @property
    def targets(self) -> np.ndarray:
        return np.asarray([s[1] for s in self.samples], dtype=np.int64)

    def __repr__(self) -> str:
        return f"ImageFiles(n={len(self)})"


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan_split(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[Sample]]:
    """``(classes, samples)`` of one split folder; ``classes`` given -> use train's indices."""
    found = _class_dirs(folder)
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(
                f"{folder} has class folder(s) {', '.join(extra)} that train/ lacks "
                f"(train classes: {', '.join(classes)})"
            )
    index = {c: i for i, c in enumerate(classes)}
    samples: list[Sample] = []
    for c in found:
        for dirpath, _, files in sorted(os.walk(folder / c, followlinks=True)):
            for fn in sorted(files):
                if fn.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fn), index[c]))
    if not samples:
        raise DataError(
            f"no images found under {folder} (expected {LAYOUT}; extensions {', '.join(IMG_EXTENSIONS)})"
        )
    return classes, samples


def _digest(root: Path, *lists: list[Sample]) -> str:
    h = hashlib.sha1()
    for samples in lists:
        for path, label in samples:
            h.update(f"{os.path.relpath(path, root)}:{label}\n".encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def _transforms(size: int) -> tuple[Any, Any]:
    from torchvision import transforms as T

    post = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train = ViewTransform(ResizedCropFlip(size), post, "to_tensor+normalize(imagenet)")
    evaluation = T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), post])
    return train, evaluation


@DATASETS.register(
    "imagefolder",
    description="images in data.root/{train,[val],[test]}/<class>/ (RGB, kw image_size=32); "
    "missing val/test carved from train",
)
def build_imagefolder(
    *,
    root: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
    image_size: int = 32,
) -> DataBundle:
    """Train: RandomResizedCrop(image_size) + flip; eval: Resize(int(1.14 * image_size)) + CenterCrop.

    Normalised with ImageNet stats. Without ``val/`` (``test/``) a stratified ``val_fraction``
    (``test_fraction``) of train/ is carved out by ``seed``; ``train_fraction`` then subsets the rest.
    ``download`` is not supported (ignored).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"data.image_size must be a positive integer (got {image_size!r})")
    if root is None:
        raise ConfigError(f"data.root is required for imagefolder (a folder with {LAYOUT})")
    if not (root / "train").is_dir():
        raise DataError(f"image folder dataset not found under {root} (expected {LAYOUT})")

    classes, train_samples = scan_split(root / "train")
    labels = np.asarray([s[1] for s in train_samples], dtype=np.int64)
    has_val, has_test = (root / "val").is_dir(), (root / "test").is_dir()
    val_samples = scan_split(root / "val", classes)[1] if has_val else []
    test_samples = scan_split(root / "test", classes)[1] if has_test else []

    idx = np.arange(len(labels), dtype=np.int64)
    val_idx = test_idx = np.zeros(0, dtype=np.int64)
    if not has_val and not has_test:
        idx, val_idx, test_idx = stratified_split(labels, seed, val_fraction, test_fraction)
    elif not has_val:
        idx, val_idx = carve(idx, labels, val_fraction, seed, f"data.val_fraction={val_fraction:g}")
    elif not has_test:
        idx, test_idx = carve(idx, labels, test_fraction, seed, f"data.test_fraction={test_fraction:g}")
    idx = stratified_subset(idx, labels, train_fraction, seed)
    if not has_val:
        val_samples = [train_samples[i] for i in val_idx]
    if not has_test:
        test_samples = [train_samples[i] for i in test_idx]
    train_list = [train_samples[i] for i in idx]

    t_train, t_eval = _transforms(image_size)
    info = {
        "dataset": "imagefolder",
        "source": str(root),
        "seed": seed,
        "val_fraction": None if has_val else val_fraction,
        "test_fraction": None if has_test else test_fraction,
        "train_fraction": train_fraction,
        "sizes": {"train": len(train_list), "val": len(val_samples), "test": len(test_samples)},
        "val_source": "val/" if has_val else "carved from train/",
        "test_source": "test/" if has_test else "carved from train/",
        "image_size": image_size,
        "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "classes": classes,
        "fingerprint": split_fingerprint(
            "imagefolder",
            {"train": idx, "val": val_idx, "test": test_idx},
            files=_digest(
                root, train_samples, val_samples if has_val else [], test_samples if has_test else []
            ),
            image_size=image_size,
        ),
    }
    return DataBundle(
        name="imagefolder",
        train=ImageFiles(train_list, t_train),
        val=ImageFiles(val_samples, t_eval),
        test=ImageFiles(test_samples, t_eval),
        num_classes=len(classes),
        input_shape=(3, image_size, image_size),
        deterministic_train=False,
        train_eval=ImageFiles(train_list, t_eval),
        info=info,
    )
