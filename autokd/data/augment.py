"""Batched, parameterised augmentations for in-memory image tensors (applied on the tensors' device).

A :class:`CropFlip` view of an image is fully described by a few integers (its *parameters*), so a view can
be stored as parameters instead of pixels and re-created exactly: that is what the augmented-view teacher
cache (FKD, Shen & Xing, ECCV 2022) keeps per image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["CropFlip", "make_augment", "AUGMENTS"]

AUGMENTS = ("none", "crop_flip")


class CropFlip:
    """CIFAR-style augmentation: zero-pad by ``pad`` pixels, take a random crop of the original size, and flip
    it horizontally with probability ½ (He et al. 2016, the CIFAR recipe every KD benchmark uses).

    Parameters of one view: ``(dy, dx, flip)`` with ``dy, dx`` in ``[0, 2·pad]`` (the crop's top-left corner
    in the padded image) and ``flip`` in ``{0, 1}``. The data are already normalised, so the padding value 0 is
    the per-channel mean (torchvision pads the raw image with black before normalising; on synthetic data the
    difference is immaterial).
    """

    name = "crop_flip"
    num_params = 3

    def __init__(self, pad: int = 4) -> None:
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ConfigError(f"data.pad must be an integer >= 0 (got {pad!r})")
        self.pad = pad

    def describe(self) -> dict[str, Any]:
        """What identifies the transform (part of every cache key over its views)."""
        return {"augment": self.name, "pad": self.pad}

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` random views' parameters, int64 ``(n, 3)`` on the CPU."""
        corner = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        flip = torch.randint(0, 2, (n, 1), generator=generator)
        return torch.cat([corner, flip], dim=1)

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """The views ``params`` (N, 3) of the images ``x`` (N, C, H, W), computed on ``x``'s device."""
        n, _, h, w = x.shape
        params = params.to(x.device, torch.long)
        padded = F.pad(x, (self.pad,) * 4)
        rows = params[:, 0:1] + torch.arange(h, device=x.device)  # (N, H)
        cols = torch.arange(w, device=x.device).expand(n, w)
        cols = torch.where(params[:, 2:3].bool(), cols.flip(1), cols) + params[:, 1:2]  # (N, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"CropFlip(pad={self.pad})"


def make_augment(name: str, pad: int = 4) -> CropFlip | None:
    """``"none"`` -> None; ``"crop_flip"`` -> :class:`CropFlip`; anything else a one-line ConfigError."""
    if name == "none":
        return None
    if name == "crop_flip":
        return CropFlip(pad)
    raise ConfigError(f"data.augment must be one of {', '.join(AUGMENTS)} (got {name!r})")
