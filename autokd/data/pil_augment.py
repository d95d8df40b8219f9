"""Parameterised augmentations of PIL images (CIFAR, image folders), so that a view can be stored as a few
integers and rendered again exactly: what the augmented-view teacher cache (FKD, Shen & Xing, ECCV 2022)
keeps per image for file datasets.

Each view type draws its parameters the way torchvision's transform of the same name does (same ranges,
same algorithm) and renders them with ``torchvision.transforms.functional``; drawn from the global torch RNG
when no generator is given, as torchvision's transforms are (so DataLoader workers seed them the same way).

- :class:`PadCropFlip` — ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()`` (the CIFAR recipe):
  parameters ``(top, left, flip)`` in the padded image.
- :class:`ResizedCropFlip` — ``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip()`` (the
  ImageNet recipe): parameters ``(top, left, height, width, flip)`` of the crop box in the original image;
  the box depends on the image's size, so it is drawn per image.

:class:`ViewTransform` puts a view type in front of the tensor conversion (``ToTensor`` + ``Normalize``) and
is the training transform of the file datasets: called on an image it draws a random view (ordinary
augmentation); :meth:`ViewTransform.render` renders given parameters.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PadCropFlip", "ResizedCropFlip", "ViewTransform", "StoredViews", "ImageDataset"]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in ``[low, high)`` (torch's RNG)."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator).item())


def _flip(generator: torch.Generator | None) -> int:
    return int(torch.rand(1, generator=generator).item() < 0.5)


class PadCropFlip:
    """Zero-pad by ``pad`` pixels, crop ``size``×``size`` at a uniformly drawn corner, flip with probability ½.

    Parameters ``(top, left, flip)``: ``top`` in ``[0, H + 2·pad − size]``, ``left`` likewise (torchvision's
    ``RandomCrop.get_params`` on the padded image), ``flip`` in ``{0, 1}``. The padding is black, as
    torchvision pads the raw image before normalising."""

    name = "pad_crop_flip"
    num_params = 3

    def __init__(self, size: int, pad: int = 4) -> None:
        self.size, self.pad = int(size), int(pad)

    def describe(self) -> dict[str, Any]:
        return {"augment": self.name, "size": self.size, "pad": self.pad}

    def sample(self, image_size: tuple[int, int], generator: torch.Generator | None = None) -> list[int]:
        """One view's parameters for an image of ``image_size = (width, height)``."""
        w, h = image_size
        top = _randint(0, h + 2 * self.pad - self.size + 1, generator)
        left = _randint(0, w + 2 * self.pad - self.size + 1, generator)
        return [top, left, _flip(generator)]

    def sample_batch(self, sizes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Parameters (M, 3) of one view of each of M images of ``sizes`` (M, 2) = (width, height), drawn at
        once (same distribution as :meth:`sample`)."""
        m = len(sizes)
        high = sizes[:, [1, 0]] + 2 * self.pad - self.size + 1  # (top, left) ranges
        corner = (torch.rand(m, 2, generator=generator, dtype=torch.float64) * high).long()
        flip = (torch.rand(m, 1, generator=generator) < 0.5).long()
        return torch.cat([corner, flip], dim=1)

    def apply(self, img, params) -> Any:
        from torchvision.transforms import functional as F

        top, left, flip = (int(p) for p in params)
        if self.pad:
            img = F.pad(img, [self.pad], fill=0)
        img = F.crop(img, top, left, self.size, self.size)
        return F.hflip(img) if flip else img

    def __repr__(self) -> str:
        return f"PadCropFlip(size={self.size}, pad={self.pad})"


class ResizedCropFlip:
    """Crop a box of random area fraction ``scale`` and aspect ratio ``ratio`` (log-uniform), resize it to
    ``size``×``size`` (bilinear, antialiased), flip with probability ½.

    The box is drawn as torchvision's ``RandomResizedCrop.get_params``: up to 10 tries of (area, log-ratio);
    the first box that fits is taken at a uniform position; otherwise the centred box of the whole image with
    its ratio clamped to ``ratio``. Parameters ``(top, left, height, width, flip)``."""

    name = "resized_crop_flip"
    num_params = 5

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)

    def describe(self) -> dict[str, Any]:
        return {"augment": self.name, "size": self.size, "scale": list(self.scale), "ratio": list(self.ratio)}

    def _box(self, width: int, height: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        area = width * height
        log_lo, log_hi = torch.log(torch.tensor(self.ratio)).tolist()  # float32, as torchvision computes them
        for _ in range(10):
            target = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = float(torch.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=generator)).item())
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h + 1, generator), _randint(0, width - w + 1, generator), h, w
        in_ratio = width / height  # no box fitted: the whole image, centred, at the nearest allowed ratio
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def sample(self, image_size: tuple[int, int], generator: torch.Generator | None = None) -> list[int]:
        """One view's parameters for an image of ``image_size = (width, height)``."""
        top, left, h, w = self._box(*image_size, generator)
        return [top, left, h, w, _flip(generator)]

    def sample_batch(self, sizes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Parameters (M, 5) of one view of each of M images of ``sizes`` (M, 2) = (width, height), drawn at
        once: all 10 tries per image in one go, the first that fits kept (same distribution as
        :meth:`sample`)."""
        m = len(sizes)
        width, height = sizes[:, 0:1].double(), sizes[:, 1:2].double()
        log_lo, log_hi = torch.log(torch.tensor(self.ratio)).tolist()
        u = torch.rand(m, 10, 2, generator=generator, dtype=torch.float64)
        target = width * height * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[..., 0])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.float().argmax(dim=1, keepdim=True)  # the first fitting try (0 when none fits)
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        width, height = width.squeeze(1), height.squeeze(1)
        in_ratio = width / height  # no try fitted: the whole image, centred, at the nearest allowed ratio
        fw = torch.where(in_ratio > self.ratio[1], torch.round(height * self.ratio[1]), width)
        fh = torch.where(in_ratio < self.ratio[0], torch.round(width / self.ratio[0]), height)
        any_fit = fits.any(dim=1)
        w, h = torch.where(any_fit, w, fw), torch.where(any_fit, h, fh)
        pos = torch.rand(m, 2, generator=generator, dtype=torch.float64)
        top = torch.where(any_fit, torch.floor(pos[:, 0] * (height - h + 1)), torch.floor((height - h) / 2))
        left = torch.where(any_fit, torch.floor(pos[:, 1] * (width - w + 1)), torch.floor((width - w) / 2))
        flip = (torch.rand(m, generator=generator) < 0.5).double()
        return torch.stack([top, left, h, w, flip], dim=1).long()

    def apply(self, img, params) -> Any:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        top, left, h, w, flip = (int(p) for p in params)
        img = F.resized_crop(img, top, left, h, w, [self.size, self.size],
                             interpolation=InterpolationMode.BILINEAR, antialias=True)
        return F.hflip(img) if flip else img

    def __repr__(self) -> str:
        return f"ResizedCropFlip(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ViewTransform:
    """A training transform: a random view of the image (``view``), then ``post`` (``ToTensor`` +
    ``Normalize``). :meth:`render` draws a given view instead of a random one."""

    def __init__(self, view: PadCropFlip | ResizedCropFlip, post: Callable[[Any], torch.Tensor],
                 post_label: str) -> None:
        self.view, self.post, self.post_label = view, post, post_label

    @property
    def num_params(self) -> int:
        return self.view.num_params

    def describe(self) -> dict[str, Any]:
        """What identifies the transform (part of every cache key over its views)."""
        return {**self.view.describe(), "post": self.post_label}

    def sample(self, image_size: tuple[int, int], generator: torch.Generator | None = None) -> list[int]:
        return self.view.sample(image_size, generator)

    def sample_batch(self, sizes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.view.sample_batch(sizes, generator)

    def render(self, img, params) -> torch.Tensor:
        return self.post(self.view.apply(img, params))

    def __call__(self, img) -> torch.Tensor:
        return self.render(img, self.view.sample(img.size))

    def __repr__(self) -> str:
        return f"ViewTransform({self.view!r}, {self.post_label})"


class ImageDataset(Dataset, abc.ABC):
    """A dataset of PIL images: subclasses give ``raw(i) -> (image, label)`` and ``image_size(i)``; items are
    ``(transform(image), label)``, and ``view_transform`` is the transform when it is a :class:`ViewTransform`
    (a training split whose views can be stored, see :class:`StoredViews`)."""

    transform: Any

    @abc.abstractmethod
    def raw(self, i: Any) -> tuple[Any, int]:
        """The untransformed image and label of item ``i``."""

    @abc.abstractmethod
    def image_size(self, i: Any) -> tuple[int, int]:
        """Item ``i``'s image size ``(width, height)``, as PIL gives it."""

    @property
    def view_transform(self) -> ViewTransform | None:
        return self.transform if isinstance(self.transform, ViewTransform) else None

    def __getitem__(self, i: Any) -> tuple[Any, int]:
        img, label = self.raw(i)
        return self.transform(img), label


class StoredViews(Dataset):
    """A file dataset's items rendered at stored views: item ``i`` is ``(view choice[i] of params[i], label)``
    (``params`` (N, K, P) integers, ``choice`` (N,) an array the caller updates in place between epochs; a
    DataLoader's worker processes, started per epoch, see the update)."""

    def __init__(self, dataset: Any, params: np.ndarray, choice: np.ndarray) -> None:
        self.dataset, self.params, self.choice = dataset, params, choice
        self.transform = dataset.view_transform

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, i: Any) -> tuple[torch.Tensor, int]:
        i = int(i)
        img, label = self.dataset.raw(i)
        return self.transform.render(img, self.params[i, self.choice[i]]), label

    def __repr__(self) -> str:
        return f"StoredViews({self.dataset!r}, views={self.params.shape[1]})"
