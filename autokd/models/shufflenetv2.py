"""ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
ECCV 2018), CIFAR layout of CRD / RepDistiller ``models/ShuffleNetv2.py``.

A 1×1 stem conv with 24 channels (no stride, no max-pool), three stages each of one stride-2 DownBlock
followed by ``num_blocks`` channel-split BasicBlocks, a 1×1 conv (1024 or 2048 channels), global average
pooling and a linear classifier. ``width_mult`` is CRD's ``net_size`` (0.5, 1, 1.5, 2; also 0.2 and 0.3).

``feats = [stem, stage1, stage2, stage3 + final 1×1 conv]``. For stages, ``preacts`` are the stage output
before the last block's final ReLU, concatenated and channel-shuffled exactly like the output (so channels
line up with ``feats``; CRD returns it unshuffled); for the stem and the final conv it is the BN output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..outputs import Outputs
from .base import MODELS, ZooModel, check_choice

__all__ = ["ShuffleNetV2", "shufflenetv2", "SHUFFLENETV2_CFGS"]

#: CRD's ``configs``: width -> (stage output channels + final conv channels, blocks per stage)
SHUFFLENETV2_CFGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2.0: ((224, 488, 976, 2048), (3, 7, 3)),
}


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBasicBlock(nn.Module):
    """Channel split; 1×1-BN-ReLU, 3×3 dw-BN, 1×1-BN-ReLU on one half; concat; shuffle. Returns (out, preact)."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = int(x.shape[1] * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        out = channel_shuffle(torch.cat([x1, F.relu(pre)], 1))
        return out, channel_shuffle(torch.cat([x1, pre], 1))


class DownBlock(nn.Module):
    """Stride-2 unit: both branches downsample (dw 3×3 stride 2), concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        out1 = self.bn1(self.conv1(x))
        out1 = F.relu(self.bn2(self.conv2(out1)))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = self.bn4(self.conv4(out2))
        out2 = F.relu(self.bn5(self.conv5(out2)))
        return channel_shuffle(torch.cat([out1, out2], 1))


class ShuffleNetV2(ZooModel):
    """CIFAR ShuffleNetV2 of size ``width_mult`` (a key of :data:`SHUFFLENETV2_CFGS`)."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 100, in_channels: int = 3) -> None:
        out_channels, num_blocks = SHUFFLENETV2_CFGS[float(width_mult)]
        super().__init__(num_classes, out_channels[3])
        self.width_mult = float(width_mult)
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        layers = []
        for cout, n in zip(out_channels[:3], num_blocks, strict=True):
            layers.append(nn.Sequential(DownBlock(cin, cout), *[ShuffleBasicBlock(cout) for _ in range(n)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2 = nn.Conv2d(cin, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.classifier = nn.Linear(out_channels[3], num_classes)

    def forward_outputs(self, x: Tensor) -> Outputs:
        pre = self.bn1(self.conv1(x))
        out = F.relu(pre)
        feats, preacts = [out], [pre]
        for layer in (self.layer1, self.layer2):
            out, pre = self._stage(layer, out)
            feats.append(out)
            preacts.append(pre)
        out, _ = self._stage(self.layer3, out)
        pre = self.bn2(self.conv2(out))
        feats.append(F.relu(pre))
        preacts.append(pre)
        return self._head(feats, preacts)

    @staticmethod
    def _stage(layer: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
        x = layer[0](x)
        pre = x
        for block in layer[1:]:
            x, pre = block(x)
        return x, pre


def _build(name: str, num_classes: int, in_channels: int, width_mult) -> ShuffleNetV2:
    width_mult = check_choice("width_mult", width_mult, sorted(SHUFFLENETV2_CFGS), model=name)
    return ShuffleNetV2(width_mult, num_classes=num_classes, in_channels=in_channels)


@MODELS.register(
    "shufflenetv2",
    family="shufflenetv2",
    builder=True,
    description="CIFAR ShuffleNetV2 family (Ma et al. 2018), CRD layout: width_mult in 0.2/0.3/0.5/1/1.5/2",
)
def shufflenetv2(num_classes: int = 100, in_channels: int = 3, width_mult: float = 1.0) -> ShuffleNetV2:
    return _build("shufflenetv2", num_classes, in_channels, width_mult)


@MODELS.register(
    "shufflenetv2_x0_5",
    family="shufflenetv2",
    description="CIFAR ShuffleNetV2 0.5x (Ma et al. 2018), CRD layout",
)
def shufflenetv2_x0_5(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    return _build("shufflenetv2_x0_5", num_classes, in_channels, 0.5)
