"""Wide ResNets (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

Layout follows CRD / RepDistiller ``models/wrn.py``: a 3×3 stem with 16 channels, three groups of
``n = (depth - 4) / 6`` pre-activation blocks (BN-ReLU-conv ×2) with widths ``16k, 32k, 64k`` and strides
1, 2, 2, then a final BN-ReLU, global average pooling and a linear classifier.

Because the blocks are pre-activation, a group's raw output has no activation of its own. The zoo's
convention is: ``feats[i]`` = the BN-ReLU'd group output (using the BN that the next group's first block,
or the final BN, applies anyway, so nothing is computed twice) and ``preacts[i]`` = the raw group output.
``feats = [stem, group1, group2, group3]``; the last one is exactly the map that is pooled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import MODELS, ZooModel, check_int, kaiming_init

__all__ = ["WideBasicBlock", "WideResNet", "wrn", "conv3x3"]

#: ``conv(in_planes, out_planes, stride) -> module``: what a block uses for its two 3×3 convolutions
ConvFactory = Callable[[int, int, int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class WideBasicBlock(nn.Module):
    """Pre-activation basic block; the projection shortcut (if any) takes the activated input, as in CRD.
    ``conv`` builds the two 3×3 convolutions (Moonshine swaps in cheap ones; the shortcut stays a 1×1 conv)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0,
                 conv: ConvFactory = conv3x3) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = conv(out_planes, out_planes, 1)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor, act: Tensor | None = None) -> Tensor:
        """``act`` may pass a precomputed ``relu(bn1(x))``."""
        if act is None:
            act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(act))


class NetworkBlock(nn.Module):
    """A group of :class:`WideBasicBlock` (CRD's name)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float,
                 conv: ConvFactory = conv3x3) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate, conv
                )
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor, act: Tensor | None = None) -> Tensor:
        x = self.layer[0](x, act)
        for block in self.layer[1:]:
            x = block(x)
        return x


class WideResNet(ZooModel):
    """WRN-depth-k: depth ``6n + 4``, widen factor ``k``."""

    def __init__(
        self,
        depth: int = 16,
        widen: int = 1,
        drop_rate: float = 0.0,
        num_classes: int = 100,
        in_channels: int = 3,
        conv: ConvFactory = conv3x3,
    ) -> None:
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        super().__init__(num_classes, ch[3])
        self.depth, self.widen = depth, widen
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate, conv)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate, conv)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate, conv)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.classifier = nn.Linear(ch[3], num_classes)
        kaiming_init(self)

    def forward_outputs(self, x: Tensor) -> Outputs:
        raw = self.conv1(x)
        feats, preacts = [], []
        for group in (self.block1, self.block2, self.block3):
            act = F.relu(group.layer[0].bn1(raw))
            feats.append(act)
            preacts.append(raw)
            raw = group(raw, act)
        feats.append(F.relu(self.bn1(raw)))
        preacts.append(raw)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, in_channels: int, depth, widen, drop_rate=0.0) -> WideResNet:
    check_int("depth", depth, minimum=10, model=name)
    if (depth - 4) % 6 != 0:
        raise ConfigError(
            f"model {name!r}: depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}"
        )
    check_int("widen", widen, model=name)
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
        raise ConfigError(f"model {name!r}: drop_rate must be a number in [0, 1), got {drop_rate!r}")
    return WideResNet(depth, widen, float(drop_rate), num_classes=num_classes, in_channels=in_channels)


@MODELS.register(
    "wrn",
    family="wrn",
    builder=True,
    description="Wide ResNet family (Zagoruyko & Komodakis 2016): depth 6n+4, widen factor k, pre-activation",
)
def wrn(
    num_classes: int = 100, in_channels: int = 3, depth: int = 16, widen: int = 1, drop_rate: float = 0.0
) -> WideResNet:
    return _build("wrn", num_classes, in_channels, depth, widen, drop_rate)


@MODELS.register("wrn_16_1", family="wrn", description="WRN-16-1 (Zagoruyko & Komodakis 2016), CRD layout")
def wrn_16_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return _build("wrn_16_1", num_classes, in_channels, 16, 1)


@MODELS.register("wrn_16_2", family="wrn", description="WRN-16-2 (Zagoruyko & Komodakis 2016), CRD layout")
def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return _build("wrn_16_2", num_classes, in_channels, 16, 2)


@MODELS.register("wrn_40_1", family="wrn", description="WRN-40-1 (Zagoruyko & Komodakis 2016), CRD layout")
def wrn_40_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return _build("wrn_40_1", num_classes, in_channels, 40, 1)


@MODELS.register("wrn_40_2", family="wrn", description="WRN-40-2 (Zagoruyko & Komodakis 2016), CRD layout")
def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    return _build("wrn_40_2", num_classes, in_channels, 40, 2)
