"""Connectors map a student feature to its teacher's shape, built from probed :class:`~autokd.outputs.Shapes`.

- channel mismatch: 1×1 conv + BN (FitNets' regressor, the common convention of CRD/mdistiller);
- spatial mismatch: adaptive average pooling when the student map is larger, bilinear interpolation when smaller;
- embeddings: a linear layer;
- FitNets' hint regressor: :class:`HintRegressor` (RepDistiller's / mdistiller's ``ConvReg`` conventions).

Connector parameters live in the loss module, so they train with the student (the distiller hands them to the
optimiser) but are not part of the exported student (unless a method's student needs them at inference, e.g.
SimKD's projector). Convolutions are initialised He-normal (fan-out) and BN to (1, 0), as the OFD/AB official
code and mdistiller initialise their connectors.

Helpers shared by the feature losses: :func:`match_spatial` (resize one map), :func:`pool_to_smaller` (CRD's
convention for parameter-free losses: pool whichever of two maps is larger down to the smaller size, never
upsample) and :func:`feature_pairs_shapes`.

Transformers: a block's patch tokens (N, L, D) are laid out as a (N, D, H', W') feature map by
:func:`tokens_to_map` (class-like tokens left out; :func:`map_to_tokens` is its inverse), which is how
transformer models report ``Outputs.feats``; every connector above then maps tokens to feature maps and back
(CNN <-> ViT): the channel axis is the embedding, the spatial axes the patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "match_spatial",
    "pool_to_smaller",
    "FeatureConnector",
    "LinearConnector",
    "HintRegressor",
    "make_connector",
    "feature_pairs_shapes",
    "tokens_to_map",
    "map_to_tokens",
]


def match_spatial(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize (N, C, H, W) ``x`` to ``size`` (H', W'): adaptive avg-pool to shrink, bilinear to grow."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return F.adaptive_avg_pool2d(x, (h, w))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def tokens_to_map(tokens: Tensor, grid: Sequence[int], prefix: int = 0) -> Tensor:
    """(N, prefix + H'·W', D) tokens -> the (N, D, H', W') map of the patch tokens (row-major grid order)."""
    n, _, d = tokens.shape
    h, w = int(grid[0]), int(grid[1])
    return tokens[:, prefix:].transpose(1, 2).reshape(n, d, h, w)


def map_to_tokens(fmap: Tensor) -> Tensor:
    """(N, C, H, W) map -> (N, H·W, C) tokens in row-major order (the inverse of :func:`tokens_to_map`)."""
    return fmap.flatten(2).transpose(1, 2)


def pool_to_smaller(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool (N, C, H, W) maps ``a`` and ``b`` to their common smaller size
    (min of the heights, min of the widths), as CRD's AT/NST/VID/FSP losses do; maps already that size are
    returned unchanged."""
    h = min(a.shape[-2], b.shape[-2])
    w = min(a.shape[-1], b.shape[-1])
    if tuple(a.shape[-2:]) != (h, w):
        a = F.adaptive_avg_pool2d(a, (h, w))
    if tuple(b.shape[-2:]) != (h, w):
        b = F.adaptive_avg_pool2d(b, (h, w))
    return a, b


def _init_conv_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class FeatureConnector(nn.Module):
    """Student (C_s, H_s, W_s) -> teacher (C_t, H_t, W_t): spatial matching, then 1×1 (or k×k) conv + BN.

    ``always_conv=True`` builds the conv even when channels already match (FitNets' regressor is always there);
    ``bn=False`` drops the BN (the conv then has a bias); ``relu=True`` ends with a ReLU (CRD's ``ConvReg``, for
    targets that are post-ReLU). To change channels only, pass a ``teacher_shape`` with the student's H, W.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], *, kernel_size: int = 1,
                 always_conv: bool = False, bn: bool = True, relu: bool = False) -> None:
        super().__init__()
        cs, ct = int(student_shape[0]), int(teacher_shape[0])
        self.out_hw = tuple(int(v) for v in teacher_shape[1:3])
        layers: list[nn.Module] = []
        if cs != ct or always_conv:
            layers.append(nn.Conv2d(cs, ct, kernel_size, padding=kernel_size // 2, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(ct))
        if relu:
            layers.append(nn.ReLU())
        self.proj: nn.Module = nn.Sequential(*layers) if layers else nn.Identity()
        _init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        if len(self.out_hw) == 2:
            x = match_spatial(x, self.out_hw)
        return self.proj(x)


class HintRegressor(nn.Module):
    """FitNets' regressor as RepDistiller's ``ConvReg`` builds it (mdistiller copies it): one convolution chosen
    from the student's (C_s, H_s, W_s) and the teacher's (C_t, H_t, W_t) maps, then BN and ReLU.

    - student map twice the teacher's: 3×3 conv, stride 2, padding 1;
    - student map half the teacher's: 4×4 transposed conv, stride 2, padding 1;
    - student map at least the teacher's size: conv with kernel (1 + H_s − H_t, 1 + W_s − W_t), no padding
      (1×1 for equal sizes);
    - any other case (the official code refuses it): bilinear resize to the teacher's size, then 1×1 conv.

    Every conv has a bias (PyTorch's default, as the official code) and PyTorch's default initialisation;
    ``relu=False`` drops the final ReLU (``use_relu``). The official code tests the heights only; here heights
    and widths are both checked, so non-square maps work.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], *, relu: bool = True) -> None:
        super().__init__()
        cs, hs, ws = (int(v) for v in student_shape[:3])
        ct, ht, wt = (int(v) for v in teacher_shape[:3])
        self.resize_to: tuple[int, int] | None = None
        if (hs, ws) == (2 * ht, 2 * wt):
            self.conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif (2 * hs, 2 * ws) == (ht, wt):
            self.conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif hs >= ht and ws >= wt:
            self.conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
        else:
            self.resize_to = (ht, wt)
            self.conv = nn.Conv2d(cs, ct, kernel_size=1)
        self.bn = nn.BatchNorm2d(ct)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.resize_to is not None:
            x = F.interpolate(x, size=self.resize_to, mode="bilinear", align_corners=False)
        return self.relu(self.bn(self.conv(x)))


class LinearConnector(nn.Module):
    """Embedding (N, D_s) -> (N, D_t); identity when the sizes agree and ``always=False``."""

    def __init__(self, d_in: int, d_out: int, *, always: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_out) if (d_in != d_out or always) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def make_connector(student_shape: Sequence[int] | int, teacher_shape: Sequence[int] | int, **kw) -> nn.Module:
    """A connector for a feature map (3-D shapes) or an embedding (ints or 1-D shapes)."""
    if isinstance(student_shape, int) or len(student_shape) == 1:
        d_s = student_shape if isinstance(student_shape, int) else student_shape[0]
        d_t = teacher_shape if isinstance(teacher_shape, int) else teacher_shape[0]
        return LinearConnector(int(d_s), int(d_t), **{k: v for k, v in kw.items() if k == "always"})
    return FeatureConnector(student_shape, teacher_shape, **kw)


def feature_pairs_shapes(student, teacher, pairs, which: str = "feats"):
    """[(teacher (C,H,W), student (C,H,W))] for ``pairs`` of (teacher stage, student stage) indices.

    ``which`` is ``feats`` or ``preacts``; models that expose no preacts fall back to ``feats``."""
    s_list, t_list = getattr(student, which), getattr(teacher, which)
    if which == "preacts":
        s_list = s_list or student.feats
        t_list = t_list or teacher.feats
    return [(t_list[ti], s_list[si]) for ti, si in pairs]
