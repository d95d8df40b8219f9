"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2).

Layout follows CRD / RepDistiller ``models/resnet.py`` (Tian et al., "Contrastive Representation
Distillation", ICLR 2020): a 3×3 stem, three stages of ``n = (depth - 2) / 6`` BasicBlocks with widths
``w, 2w, 4w`` and strides 1, 2, 2, global average pooling and a linear classifier. ``resnet8x4`` and
``resnet32x4`` are CRD's 4×-wide variants (stem 32, widths 64/128/256).

Features: ``feats = [stem, stage1, stage2, stage3]`` (post-ReLU), ``preacts`` the same before the final ReLU
(the residual sum for stages, the stem's BN output for the stem).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import MODELS, ZooModel, check_int, kaiming_init

__all__ = ["BasicBlock", "CifarResNet", "resnet"]


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers plus identity (or 1×1 conv-BN projection) shortcut; returns (out, preact)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        preact = out + identity
        return F.relu(preact), preact


class CifarResNet(ZooModel):
    """CIFAR ResNet with BasicBlocks: depth ``6n + 2``, stage widths ``width·(1, 2, 4)``."""

    def __init__(
        self,
        depth: int = 20,
        width: int = 16,
        stem_width: int | None = None,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        n = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        super().__init__(num_classes, widths[-1])
        stem = width if stem_width is None else stem_width
        self.depth = depth
        self.conv1 = conv3x3(in_channels, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        inplanes = stem
        layers = []
        for w, stride in zip(widths, (1, 2, 2), strict=True):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(inplanes, w, stride if i == 0 else 1))
                inplanes = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.classifier = nn.Linear(widths[-1], num_classes)
        kaiming_init(self)

    def forward_outputs(self, x: Tensor) -> Outputs:
        pre = self.bn1(self.conv1(x))
        out = F.relu(pre)
        feats, preacts = [out], [pre]
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                out, pre = block(out)
            feats.append(out)
            preacts.append(pre)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, in_channels: int, depth, width, stem_width) -> CifarResNet:
    check_int("depth", depth, minimum=8, model=name)
    if (depth - 2) % 6 != 0:
        raise ConfigError(
            f"model {name!r}: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}"
        )
    check_int("width", width, model=name)
    if stem_width is not None:
        check_int("stem_width", stem_width, model=name)
    return CifarResNet(depth, width, stem_width, num_classes=num_classes, in_channels=in_channels)


@MODELS.register(
    "resnet",
    family="resnet",
    builder=True,
    description="CIFAR ResNet family (He et al. 2016): depth 6n+2, stage widths w/2w/4w, stem stem_width",
)
def resnet(
    num_classes: int = 100,
    in_channels: int = 3,
    depth: int = 20,
    width: int = 16,
    stem_width: int | None = None,
) -> CifarResNet:
    return _build("resnet", num_classes, in_channels, depth, width, stem_width)


def _desc(depth: int, width: int = 16, stem: int | None = None) -> str:
    extra = f", stem {stem} (CRD x4 variant)" if stem else ""
    return f"CIFAR ResNet-{depth} (He et al. 2016), widths {width}/{2 * width}/{4 * width}{extra}"


@MODELS.register("resnet8", family="resnet", description=_desc(8))
def resnet8(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet8", num_classes, in_channels, 8, 16, None)


@MODELS.register("resnet14", family="resnet", description=_desc(14))
def resnet14(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet14", num_classes, in_channels, 14, 16, None)


@MODELS.register("resnet20", family="resnet", description=_desc(20))
def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet20", num_classes, in_channels, 20, 16, None)


@MODELS.register("resnet32", family="resnet", description=_desc(32))
def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet32", num_classes, in_channels, 32, 16, None)


@MODELS.register("resnet44", family="resnet", description=_desc(44))
def resnet44(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet44", num_classes, in_channels, 44, 16, None)


@MODELS.register("resnet56", family="resnet", description=_desc(56))
def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet56", num_classes, in_channels, 56, 16, None)


@MODELS.register("resnet110", family="resnet", description=_desc(110))
def resnet110(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet110", num_classes, in_channels, 110, 16, None)


@MODELS.register("resnet8x4", family="resnet", description=_desc(8, 64, 32))
def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet8x4", num_classes, in_channels, 8, 64, 32)


@MODELS.register("resnet32x4", family="resnet", description=_desc(32, 64, 32))
def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    return _build("resnet32x4", num_classes, in_channels, 32, 64, 32)
