"""Involution (Li et al., "Involution: Inverting the Inherence of Convolution for Visual Recognition",
CVPR 2021) and a small RedNet-style family, the *involution teacher* of Co-advise (CiT).

Involution inverts convolution's two inductive biases: its K×K kernel is generated per pixel from that
pixel's features (spatial-specific) and shared across the channels of a group (channel-agnostic). For a map
x (N, C, H, W) with G = C / ``group_channels`` groups::

    kernel = Conv1×1(C/r -> K²·G)(ReLU(BN(Conv1×1(C -> C/r)(x))))      # (N, G·K², H, W)
    y[n, g·C/G + c, i, j] = Σ_{u, v} kernel[n, g, (u, v), i, j] · x[n, g·C/G + c, i + u, j + v]

with zero padding (K−1)/2; for ``stride`` s the kernel is generated from the s×s-average-pooled map and the
window is sampled with stride s (the official ``involution_naive``; pooling in ceil mode here, so odd and 1-pixel
maps work). ``r`` = ``reduction`` (4 officially),
``group_channels`` 16 officially (4 here, for tiny nets).

``rednet``: a stem conv3×3-BN-ReLU (RedNet's stem also starts with a conv), then ``depth`` stages of one
residual involution block each (1×1 conv-BN-ReLU, involution K×K-BN-ReLU with stride 2 in every stage but the
first, 1×1 conv-BN, projection shortcut when the shape changes, ReLU), channels ``width·2^i``, global
average pooling and a linear classifier. RedNet's bottleneck expansion is dropped (tiny inputs); K = 3 by
default (RedNet uses 7 on ImageNet). ``feats``: the stage outputs; ``preacts``: before their last ReLU.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import MODELS, ZooModel, check_int, kaiming_init

__all__ = ["Involution", "RedNet", "rednet"]


class Involution(nn.Module):
    """Involution with kernel size ``kernel_size``, ``channels`` split into groups of ``group_channels``."""

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, group_channels: int = 4,
                 reduction: int = 4) -> None:
        super().__init__()
        if channels % group_channels:
            raise ConfigError(f"involution: channels ({channels}) must be a multiple of group_channels "
                              f"({group_channels})")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.groups = channels // group_channels
        hidden = max(1, channels // reduction)
        self.reduce = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.span = nn.Conv2d(hidden, kernel_size * kernel_size * self.groups, 1)

    def kernels(self, x: Tensor) -> Tensor:
        """The per-pixel kernels, (N, G, K², H', W')."""
        src = x if self.stride == 1 else F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        k = self.span(self.reduce(src))
        return k.view(k.shape[0], self.groups, self.kernel_size**2, *k.shape[-2:])

    def forward(self, x: Tensor) -> Tensor:
        kern = self.kernels(x)
        n, c = x.shape[:2]
        h, w = kern.shape[-2:]
        k = self.kernel_size
        windows = F.unfold(x, k, padding=(k - 1) // 2, stride=self.stride)  # (N, C·K², H'·W')
        windows = windows.view(n, self.groups, c // self.groups, k * k, h, w)
        return (kern.unsqueeze(2) * windows).sum(3).reshape(n, c, h, w)


class InvolutionBlock(nn.Module):
    """Residual block: 1×1 conv-BN-ReLU, involution-BN-ReLU (strided), 1×1 conv-BN, shortcut; returns the
    pre-activation sum (the caller applies the ReLU)."""

    def __init__(self, cin: int, cout: int, stride: int, kernel_size: int, group_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
        self.inv = nn.Sequential(Involution(cout, kernel_size, stride, group_channels), nn.BatchNorm2d(cout),
                                 nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            pool = [nn.AvgPool2d(stride, stride, ceil_mode=True)] if stride != 1 else []
            self.shortcut = nn.Sequential(*pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return self.expand(self.inv(self.reduce(x))) + self.shortcut(x)


class RedNet(ZooModel):
    """Stem conv3×3-BN-ReLU, ``depth`` residual involution stages of ``width·2^i`` channels, GAP, linear."""

    def __init__(self, width: int = 16, depth: int = 3, kernel_size: int = 3, group_channels: int = 4,
                 num_classes: int = 10, in_channels: int = 3) -> None:
        chans = [width * 2**i for i in range(depth)]
        super().__init__(num_classes, chans[-1])
        self.width, self.depth = width, depth
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        cin = width
        blocks = []
        for i, c in enumerate(chans):
            blocks.append(InvolutionBlock(cin, c, 1 if i == 0 else 2, kernel_size, group_channels))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(cin, num_classes)
        kaiming_init(self)

    def forward_outputs(self, x: Tensor):
        out = self.stem(x)
        feats, preacts = [], []
        for block in self.blocks:
            pre = block(out)
            out = F.relu(pre)
            feats.append(out)
            preacts.append(pre)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, in_channels: int, width, depth, kernel_size, group_channels) -> RedNet:
    check_int("width", width, model=name)
    check_int("depth", depth, model=name)
    check_int("kernel_size", kernel_size, model=name)
    check_int("group_channels", group_channels, model=name)
    if depth > 6:
        raise ConfigError(f"model {name!r}: depth must be an integer in [1, 6], got {depth}")
    if kernel_size % 2 == 0:
        raise ConfigError(f"model {name!r}: kernel_size must be odd, got {kernel_size}")
    if width % group_channels:
        raise ConfigError(f"model {name!r}: width ({width}) must be a multiple of group_channels ({group_channels})")
    return RedNet(width, depth, kernel_size, group_channels, num_classes=num_classes, in_channels=in_channels)


@MODELS.register("rednet", family="rednet", builder=True,
                 description="involution network (RedNet-style): conv stem, depth residual involution stages")
def rednet(num_classes: int = 10, in_channels: int = 3, width: int = 16, depth: int = 3, kernel_size: int = 3,
           group_channels: int = 4) -> RedNet:
    return _build("rednet", num_classes, in_channels, width, depth, kernel_size, group_channels)


@MODELS.register("rednet_w8", family="rednet", description="involution network, widths 8/16/32, 3x3 kernels")
def rednet_w8(num_classes: int = 10, in_channels: int = 3) -> RedNet:
    return _build("rednet_w8", num_classes, in_channels, 8, 3, 3, 4)


@MODELS.register("rednet_w16", family="rednet",
                 description="involution network, widths 16/32/64, 3x3 kernels (CiT involution teacher on digits)")
def rednet_w16(num_classes: int = 10, in_channels: int = 3) -> RedNet:
    return _build("rednet_w16", num_classes, in_channels, 16, 3, 3, 4)
