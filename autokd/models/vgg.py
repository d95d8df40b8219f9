"""VGG with batch norm (Simonyan & Zisserman, "Very Deep Convolutional Networks", ICLR 2015), CIFAR layout.

Follows CRD / RepDistiller ``models/vgg.py``: five conv blocks (conv3×3-BN-ReLU, conv bias kept), a 2×2
max-pool before blocks 1, 2 and 3 (and before block 4 only for inputs of 64 pixels or more, as CRD does),
global average pooling and a single linear classifier on the 512-channel map. Pools are skipped when the
map is already 1 pixel high or wide, so 8×8 inputs work (8 → 4 → 2 → 1 → 1).

``feats`` are the five block outputs after their last ReLU, ``preacts`` the same before it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..outputs import Outputs
from .base import MODELS, MaybeMaxPool2d, ZooModel, check_choice, check_positive, kaiming_init

__all__ = ["VGG", "VGG_CFGS", "vgg"]

#: CRD's per-block channel lists, keyed by depth (number of conv layers + 3 in the original VGG naming).
VGG_CFGS: dict[int, list[list[int]]] = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(channels: list[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in channels:
        layers += [nn.Conv2d(cin, c, kernel_size=3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        cin = c
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward (preact)


class VGG(ZooModel):
    """VGG-BN with five blocks; ``width`` multiplies every channel count."""

    def __init__(
        self, depth: int = 13, width: float = 1.0, num_classes: int = 100, in_channels: int = 3
    ) -> None:
        cfg = [[max(1, round(c * width)) for c in block] for block in VGG_CFGS[depth]]
        super().__init__(num_classes, cfg[-1][-1])
        self.depth, self.width = depth, width
        cin = in_channels
        blocks = []
        for channels in cfg:
            blocks.append(_block(channels, cin))
            cin = channels[-1]
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool = MaybeMaxPool2d()
        self.classifier = nn.Linear(cin, num_classes)
        kaiming_init(self, linear_std=0.01)

    def forward_outputs(self, x: Tensor) -> Outputs:
        big = x.shape[-2] >= 64
        feats, preacts = [], []
        out = x
        for i, block in enumerate((self.block0, self.block1, self.block2, self.block3, self.block4)):
            if i in (1, 2, 3) or (i == 4 and big):
                out = self.pool(out)
            pre = block(out)
            out = F.relu(pre)
            feats.append(out)
            preacts.append(pre)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, in_channels: int, depth, width) -> VGG:
    depth = check_choice("depth", depth, sorted(VGG_CFGS), model=name)
    width = check_positive("width", width, model=name)
    return VGG(depth, width, num_classes=num_classes, in_channels=in_channels)


@MODELS.register(
    "vgg",
    family="vgg",
    builder=True,
    description="VGG-BN family (Simonyan & Zisserman 2015), CRD CIFAR layout: depth 8/11/13/16/19, width mult",
)
def vgg(num_classes: int = 100, in_channels: int = 3, depth: int = 13, width: float = 1.0) -> VGG:
    return _build("vgg", num_classes, in_channels, depth, width)


@MODELS.register("vgg8", family="vgg", description="VGG-8-BN (CRD's CIFAR vgg8: one conv per block)")
def vgg8(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _build("vgg8", num_classes, in_channels, 8, 1.0)


@MODELS.register("vgg11", family="vgg", description="VGG-11-BN (Simonyan & Zisserman 2015), CRD CIFAR layout")
def vgg11(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _build("vgg11", num_classes, in_channels, 11, 1.0)


@MODELS.register("vgg13", family="vgg", description="VGG-13-BN (Simonyan & Zisserman 2015), CRD CIFAR layout")
def vgg13(num_classes: int = 100, in_channels: int = 3) -> VGG:
    return _build("vgg13", num_classes, in_channels, 13, 1.0)
