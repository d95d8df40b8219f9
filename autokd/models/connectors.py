"""Connectors map a student feature to its teacher's shape, built from probed :class:`~autokd.outputs.Shapes`.

- channel mismatch: 1×1 conv + BN (FitNets' regressor, the common convention of CRD/mdistiller);
- spatial mismatch: adaptive average pooling when the student map is larger, bilinear interpolation when smaller;
- embeddings: a linear layer.

Connector parameters train with the student but are not part of the exported student (unless a method's
student needs them at inference, e.g. SimKD's projector).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["match_spatial", "FeatureConnector", "LinearConnector", "make_connector", "feature_pairs_shapes"]


def match_spatial(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize (N, C, H, W) ``x`` to ``size`` (H', W'): adaptive avg-pool to shrink, bilinear to grow."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return F.adaptive_avg_pool2d(x, (h, w))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


class FeatureConnector(nn.Module):
    """Student (C_s, H_s, W_s) -> teacher (C_t, H_t, W_t): spatial matching, then 1×1 (or 3×3) conv + BN.

    ``always_conv=True`` builds the conv even when channels already match (FitNets' regressor is always there).
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], *, kernel_size: int = 1,
                 always_conv: bool = False, bn: bool = True) -> None:
        super().__init__()
        cs, ct = int(student_shape[0]), int(teacher_shape[0])
        self.out_hw = tuple(int(v) for v in teacher_shape[1:3])
        if cs != ct or always_conv:
            layers: list[nn.Module] = [nn.Conv2d(cs, ct, kernel_size, padding=kernel_size // 2, bias=not bn)]
            if bn:
                layers.append(nn.BatchNorm2d(ct))
            self.proj: nn.Module = nn.Sequential(*layers)
        else:
            self.proj = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(match_spatial(x, self.out_hw))


class LinearConnector(nn.Module):
    """Embedding (N, D_s) -> (N, D_t); identity when the sizes agree and ``always=False``."""

    def __init__(self, d_in: int, d_out: int, *, always: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out) if (d_in != d_out or always) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def make_connector(student_shape: Sequence[int], teacher_shape: Sequence[int], **kw) -> nn.Module:
    """A connector for a feature map (3-D shapes) or an embedding (ints)."""
    if isinstance(student_shape, int) or len(student_shape) == 1:
        d_s = student_shape if isinstance(student_shape, int) else student_shape[0]
        d_t = teacher_shape if isinstance(teacher_shape, int) else teacher_shape[0]
        return LinearConnector(int(d_s), int(d_t), **{k: v for k, v in kw.items() if k == "always"})
    return FeatureConnector(student_shape, teacher_shape, **kw)


def feature_pairs_shapes(student, teacher, pairs, which: str = "feats"):
    """[(teacher (C,H,W), student (C,H,W))] for ``pairs`` of (teacher stage, student stage) indices."""
    s_list, t_list = getattr(student, which), getattr(teacher, which)
    return [(t_list[ti], s_list[si]) for ti, si in pairs]
