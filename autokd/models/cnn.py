"""Plain small CNNs (LeCun et al. 1998 / VGG-style conv-BN-ReLU stacks) for tiny inputs such as the 8×8
scikit-learn digits: ``depth`` blocks of ``convs`` conv3×3-BN-ReLU layers with ``width·2^i`` channels, a 2×2
max-pool before every block but the first (skipped once the map is 1 pixel high or wide), global average
pooling and a linear classifier. E.g. ``cnn(width=32)`` as a digits teacher and ``cnn(width=2)`` as a student.

``feats`` are the block outputs (block 0 acts as the stem), ``preacts`` their last BN outputs. On 8×8 inputs a
depth-3 net gives 8×8, 4×4, 2×2 maps. ``convs`` deepens a block at constant width and resolution (what
Net2DeeperNet grows, see :mod:`autokd.models.net2net`); ``convs=1`` is the original layout (same state dict).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import MODELS, MaybeMaxPool2d, ZooModel, check_int, kaiming_init

__all__ = ["SmallCNN", "cnn"]


def _block(cin: int, c: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        cin = c
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward (preact)


class SmallCNN(ZooModel):
    """``depth`` blocks of ``convs`` conv3×3-BN-ReLU layers, channels ``width·2^i``, max-pool between blocks."""

    def __init__(self, width: int = 4, depth: int = 3, num_classes: int = 10, in_channels: int = 3,
                 convs: int = 1) -> None:
        chans = [width * 2**i for i in range(depth)]
        super().__init__(num_classes, chans[-1])
        self.width, self.depth, self.convs = width, depth, convs
        blocks = []
        cin = in_channels
        for c in chans:
            blocks.append(_block(cin, c, convs))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.pool = MaybeMaxPool2d()
        self.classifier = nn.Linear(cin, num_classes)
        kaiming_init(self)

    def forward_outputs(self, x: Tensor) -> Outputs:
        feats, preacts = [], []
        out = x
        for i, block in enumerate(self.blocks):
            if i > 0:
                out = self.pool(out)
            pre = block(out)
            out = F.relu(pre)
            feats.append(out)
            preacts.append(pre)
        return self._head(feats, preacts)


def _build(name: str, num_classes: int, in_channels: int, width, depth, convs=1) -> SmallCNN:
    check_int("width", width, model=name)
    check_int("depth", depth, model=name)
    check_int("convs", convs, model=name)
    if depth > 8:
        raise ConfigError(f"model {name!r}: depth must be an integer in [1, 8], got {depth}")
    if convs > 4:
        raise ConfigError(f"model {name!r}: convs must be an integer in [1, 4], got {convs}")
    return SmallCNN(width, depth, num_classes=num_classes, in_channels=in_channels, convs=convs)


@MODELS.register(
    "cnn",
    family="cnn",
    builder=True,
    description="plain conv3x3-BN-ReLU stack for tiny inputs: depth blocks of convs layers, channels width*2^i",
)
def cnn(num_classes: int = 10, in_channels: int = 3, width: int = 4, depth: int = 3, convs: int = 1) -> SmallCNN:
    return _build("cnn", num_classes, in_channels, width, depth, convs)


@MODELS.register("cnn_w2", family="cnn", description="plain 3-block CNN, widths 2/4/8 (tiny digits student)")
def cnn_w2(num_classes: int = 10, in_channels: int = 3) -> SmallCNN:
    return _build("cnn_w2", num_classes, in_channels, 2, 3)


@MODELS.register("cnn_w4", family="cnn", description="plain 3-block CNN, widths 4/8/16")
def cnn_w4(num_classes: int = 10, in_channels: int = 3) -> SmallCNN:
    return _build("cnn_w4", num_classes, in_channels, 4, 3)


@MODELS.register("cnn_w8", family="cnn", description="plain 3-block CNN, widths 8/16/32")
def cnn_w8(num_classes: int = 10, in_channels: int = 3) -> SmallCNN:
    return _build("cnn_w8", num_classes, in_channels, 8, 3)


@MODELS.register("cnn_w32", family="cnn", description="plain 3-block CNN, widths 32/64/128 (digits teacher)")
def cnn_w32(num_classes: int = 10, in_channels: int = 3) -> SmallCNN:
    return _build("cnn_w32", num_classes, in_channels, 32, 3)
