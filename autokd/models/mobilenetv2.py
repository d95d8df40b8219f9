"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

CIFAR layout of CRD / RepDistiller ``models/mobilenetv2.py`` (``mobilenetv2_T_w(T, W)``): stride-2 3×3 stem
with ``32·W`` channels, the seven inverted-residual settings with expansion ``T`` (CRD keeps the first one at
expansion 1), a 1×1 conv to 1280 channels (``1280·W`` when ``W > 1``), global average pooling and a linear
classifier. CRD's "MobileNetV2" student is ``mobilenetv2_x0_5`` (``mobile_half``: T=6, W=0.5).

Stages (resolution groups, 32×32 input): ``feats = [stem (16²), blocks 0-1 (16²), block 2 (8²),
blocks 3-4 (4²), blocks 5-6 + final 1×1 conv (2²)]``. Linear-bottleneck outputs have no final activation,
so for those stages ``preacts`` equal ``feats``; the stem and the last stage's preact is their BN output.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..outputs import Outputs
from .base import MODELS, ZooModel, check_int, check_positive

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]


class InvertedResidual(nn.Module):
    """1×1 expand - 3×3 depthwise - 1×1 linear projection, residual when stride 1 and in == out."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(ZooModel):
    """CIFAR MobileNetV2 with expansion ``expansion`` (CRD's T) and width multiplier ``width_mult`` (W)."""

    #: (expansion or None for T, channels, repeats, stride) -- CRD's ``interverted_residual_setting``.
    SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
               (None, 160, 3, 2), (None, 320, 1, 1))  # fmt: skip
    #: index of the last block setting of each resolution group before the final 1×1 conv
    STAGE_ENDS = (1, 2, 4)

    def __init__(
        self, width_mult: float = 1.0, expansion: int = 6, num_classes: int = 100, in_channels: int = 3
    ) -> None:
        last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        super().__init__(num_classes, last_channel)
        self.width_mult, self.expansion = width_mult, expansion
        cin = max(1, int(32 * width_mult))
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        )
        blocks = []
        for t, c, n, s in self.SETTING:
            cout = max(1, int(c * width_mult))
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, expansion if t is None else t))
                cin = cout
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.conv2 = nn.Sequential(
            nn.Conv2d(cin, last_channel, 1, 1, 0, bias=False),
            nn.BatchNorm2d(last_channel),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(last_channel, num_classes)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_outputs(self, x: Tensor) -> Outputs:
        conv, bn, _ = self.conv1
        pre = bn(conv(x))
        out = F.relu(pre)
        feats, preacts = [out], [pre]
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in self.STAGE_ENDS:
                feats.append(out)
                preacts.append(out)
        conv, bn, _ = self.conv2
        pre = bn(conv(out))
        feats.append(F.relu(pre))
        preacts.append(pre)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, in_channels: int, width_mult, expansion) -> MobileNetV2:
    width_mult = check_positive("width_mult", width_mult, model=name)
    check_int("expansion", expansion, model=name)
    return MobileNetV2(width_mult, expansion, num_classes=num_classes, in_channels=in_channels)


@MODELS.register(
    "mobilenetv2",
    family="mobilenetv2",
    builder=True,
    description="CIFAR MobileNetV2 family (Sandler et al. 2018), CRD's mobilenetv2_T_w: expansion T, width_mult W",
)
def mobilenetv2(
    num_classes: int = 100, in_channels: int = 3, width_mult: float = 1.0, expansion: int = 6
) -> MobileNetV2:
    return _build("mobilenetv2", num_classes, in_channels, width_mult, expansion)


@MODELS.register(
    "mobilenetv2_x0_5",
    aliases=("mobile_half",),
    family="mobilenetv2",
    description="CIFAR MobileNetV2 x0.5, T=6 (CRD's 'MobileNetV2' student, mobile_half)",
)
def mobilenetv2_x0_5(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    return _build("mobilenetv2_x0_5", num_classes, in_channels, 0.5, 6)


@MODELS.register(
    "mobilenetv2_x0_25",
    family="mobilenetv2",
    description="CIFAR MobileNetV2 x0.25, T=6 (Sandler et al. 2018), CRD layout",
)
def mobilenetv2_x0_25(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    return _build("mobilenetv2_x0_25", num_classes, in_channels, 0.25, 6)
