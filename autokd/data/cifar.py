"""CIFAR-10 / CIFAR-100 from the official "python version" pickles under ``root``.

The batches are read by :func:`read_cifar_batches`, not by ``torchvision.datasets.CIFAR10``: torchvision
md5-checks every file on load (a re-packed or test copy is refused) and keeps no hook to skip it. The
format is the official one (pickled dicts with ``data``: uint8 N x 3072 in R,G,B planes and ``labels`` /
``fine_labels``), as torchvision reads it. Only ``download=True`` goes through torchvision (download +
md5 check + extraction), and only when the files are missing. Note: pickles can run code; load only
files from a trusted source, as with torchvision.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import DATASETS, DataBundle, split_fingerprint
from .pil_augment import ImageDataset, PadCropFlip, ViewTransform
from .splits import carve, stratified_subset

__all__ = ["CifarImages", "CifarSpec", "CIFAR_SPECS", "read_cifar_batches", "build_cifar"]


@dataclass(frozen=True)
class CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: str


CIFAR_SPECS = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        torchvision_class="CIFAR100",
    ),
}


def _str(k: Any) -> Any:
    return k.decode("latin1") if isinstance(k, bytes) else k


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # unreadable / truncated / not a pickle
        raise DataError(f"cannot read CIFAR file {path}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise DataError(f"cannot read CIFAR file {path}: expected a pickled dict, got {type(obj).__name__}")
    return {_str(k): v for k, v in obj.items()}


def read_cifar_batches(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read official-format batch files: ``(images uint8 (N, 32, 32, 3), labels int64 (N,))``."""
    images, labels = [], []
    for name in files:
        path = folder / name
        entry = _load_pickle(path)
        if "data" not in entry or label_key not in entry:
            raise DataError(f"cannot read CIFAR file {path}: missing key 'data' or {label_key!r}")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(entry[label_key]):
            raise DataError(
                f"cannot read CIFAR file {path}: 'data' has shape {data.shape}, expected "
                f"({len(entry[label_key])}, 3072)"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(entry[label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


class CifarImages(ImageDataset):
    """``images[indices[i]]`` (uint8 HWC) as a PIL image through ``transform``; items ``(x, label)``."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None, transform: Any
    ) -> None:
        self.images = images
        self.labels = labels
        self.indices = np.arange(len(labels), dtype=np.int64) if indices is None else np.asarray(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, i: Any) -> tuple[Any, int]:
        """Item ``i`` before its transform: ``(PIL image, label)``."""
        from PIL import Image

        j = self.indices[int(i)]
        return Image.fromarray(self.images[j]), int(self.labels[j])

    def image_size(self, i: Any) -> tuple[int, int]:
        """``(width, height)`` of image ``i``."""
        return 32, 32

    @property
    def targets(self) -> np.ndarray:
        return self.labels[self.indices]

    def __repr__(self) -> str:
        return f"CifarImages(n={len(self)})"


def _locate(root: Path, spec: CifarSpec) -> Path | None:
    """The folder holding the batch files: ``root/<folder>`` or ``root`` itself."""
    need = spec.train_files + spec.test_files
    for cand in (root / spec.folder, root):
        if all((cand / f).is_file() for f in need):
            return cand
    return None


def _transforms(spec: CifarSpec) -> tuple[Any, Any]:
    from torchvision import transforms as T

    post = T.Compose([T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    train = ViewTransform(PadCropFlip(32, pad=4), post, f"to_tensor+normalize{spec.mean}/{spec.std}")
    evaluation = post
    return train, evaluation


def build_cifar(
    name: str,
    *,
    root: Path | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    train_fraction: float,
    download: bool,
) -> DataBundle:
    """CIFAR bundle: val = stratified ``val_fraction`` of the official train set (eval transform),
    test = the official test set (``test_fraction`` is ignored), train = the rest (``train_fraction`` of
    it, stratified) with RandomCrop(32, 4) + flip."""
    spec = CIFAR_SPECS[name]
    expected = f"{spec.folder}/ with {', '.join(spec.train_files + spec.test_files)}"
    if root is None:
        raise ConfigError(
            f"data.root is required for {name}: the folder containing {spec.folder}/ "
            f"(or a folder to download into with `data.download: true`)"
        )
    folder = _locate(root, spec)
    if folder is None and download:
        try:
            import torchvision.datasets as tvd

            getattr(tvd, spec.torchvision_class)(root=str(root), train=True, download=True)
        except Exception as e:  # network, disk, checksum
            raise DataError(f"could not download {spec.title} to {root}: {type(e).__name__}: {e}") from e
        folder = _locate(root, spec)
    if folder is None:
        raise DataError(
            f"{spec.title} not found under {root} (expected {expected}); download it with "
            f"`data.download: true` in the study, or place the extracted python version there"
        )

    images, labels = read_cifar_batches(folder, spec.train_files, spec.label_key)
    test_images, test_labels = read_cifar_batches(folder, spec.test_files, spec.label_key)
    for lab, what in ((labels, "train"), (test_labels, "test")):
        if lab.size and (lab.min() < 0 or lab.max() >= spec.num_classes):
            raise DataError(f"{spec.title} under {folder}: {what} labels outside 0..{spec.num_classes - 1}")
    classes = None
    if (folder / spec.meta_file).is_file():
        names = _load_pickle(folder / spec.meta_file).get(spec.names_key)
        classes = [_str(c) for c in names] if names is not None else None

    train_idx, val_idx = carve(
        np.arange(len(labels)), labels, val_fraction, seed, f"data.val_fraction={val_fraction:g}"
    )
    train_idx = stratified_subset(train_idx, labels, train_fraction, seed)
    t_train, t_eval = _transforms(spec)
    info = {
        "dataset": name,
        "source": str(folder),
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": None,  # official test set
        "train_fraction": train_fraction,
        "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_labels)},
        "total": len(labels) + len(test_labels),
        "val_source": "carved from the official train set",
        "test_source": "official test set",
        "normalize": {"mean": list(spec.mean), "std": list(spec.std)},
        "classes": classes,
        "fingerprint": split_fingerprint(
            name, {"train": train_idx, "val": val_idx}, n_train=len(labels), n_test=len(test_labels)
        ),
    }
    return DataBundle(
        name=name,
        train=CifarImages(images, labels, train_idx, t_train),
        val=CifarImages(images, labels, val_idx, t_eval),
        test=CifarImages(test_images, test_labels, None, t_eval),
        num_classes=spec.num_classes,
        input_shape=(3, 32, 32),
        deterministic_train=False,
        train_eval=CifarImages(images, labels, train_idx, t_eval),
        info=info,
    )


@DATASETS.register(
    "cifar10",
    description="CIFAR-10 (3x32x32, 10 classes) from data.root/cifar-10-batches-py; val carved from train",
)
def build_cifar10(
    *,
    root: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
) -> DataBundle:
    """CIFAR-10; see :func:`build_cifar` (``test_fraction`` is ignored: test = official test set)."""
    return build_cifar(
        "cifar10",
        root=root,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train_fraction=train_fraction,
        download=download,
    )


@DATASETS.register(
    "cifar100",
    description="CIFAR-100 (3x32x32, 100 fine classes) from data.root/cifar-100-python; val carved from train",
)
def build_cifar100(
    *,
    root: Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    train_fraction: float = 1.0,
    download: bool = False,
) -> DataBundle:
    """CIFAR-100 (fine labels); see :func:`build_cifar` (``test_fraction`` is ignored)."""
    return build_cifar(
        "cifar100",
        root=root,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train_fraction=train_fraction,
        download=download,
    )
