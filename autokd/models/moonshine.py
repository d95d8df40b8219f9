"""Moonshine students (Crowley, Gray & Storkey, "Moonshine: Distilling with Cheap Convolutions", NeurIPS 2018).

The student is the teacher's Wide ResNet with every 3×3 convolution of its blocks replaced by a cheap one
(the stem and the 1×1 projection shortcuts stay full), then distilled with attention transfer at the end of
each of the three groups. Layout and block names follow the official code (BayesWatch/pytorch-moonshine,
``models/blocks.py``); the WRN is :mod:`autokd.models.wrn` (CRD layout), so a ``moonshine`` student and a
``wrn`` teacher of the same depth and width have stage-aligned ``feats``.

Cheap convolutions ``(group_size g, bottleneck b)`` replacing a 3×3 conv from C_in to C_out channels:

- ``g = 0, b = 1``: the full 3×3 conv (the teacher's block; official ``Conv``);
- ``g >= 1, b = 1``: grouped 3×3 (C_in → C_in, groups of ``g`` channels; ``g = 1`` is depthwise) + BN + ReLU
  + pointwise 1×1 (C_in → C_out) — official ``DConv`` (g = 1) / ``DConvG{g}``;
- ``g = 0, b > 1``: bottleneck 1×1 (C_in → C_out/b) + BN + ReLU, full 3×3, BN + ReLU, 1×1 (→ C_out) —
  official ``ConvB{b}``;
- ``g >= 1, b > 1``: the same bottleneck with a grouped 3×3 (groups of ``g`` channels) — official ``G{g}B{b}``.

``g`` is the *group size* (channels per group), as in the official code (``groups = channels // g``), not the
number of groups. The block's own BN + ReLU follow the cheap conv as in the WRN block. ``feats``/``preacts``:
those of :class:`~autokd.models.wrn.WideResNet` (stem, group 1, group 2, group 3).

Distillation (the paper's pairing): CE + attention transfer on the three group outputs, β = 1000
(``--beta 1e3`` in the official README, KD off: ``--alpha 0``) — autokd's ``at`` term with weight 1000 and the
default stage-aligned pairs (which leave out the stems) computes the same sum of per-group
``(at(s) − at(t)).pow(2).mean()``. One difference: the official code takes the raw group outputs, autokd's
``at`` the BN-ReLU'd ones (``feats``; the raw ones are ``preacts``). See ``search_spaces/moonshine.yaml``.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..errors import ConfigError
from .base import MODELS, check_int
from .wrn import WideResNet

__all__ = ["GroupedPointwise", "CheapBottleneck", "cheap_conv", "MoonshineWRN", "moonshine"]


class GroupedPointwise(nn.Sequential):
    """Grouped 3×3 (C_in → C_in, ``group_size`` channels per group, stride) → BN → ReLU → 1×1 (C_in → C_out)."""

    def __init__(self, cin: int, cout: int, stride: int, group_size: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin // group_size, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
        )  # fmt: skip


class CheapBottleneck(nn.Sequential):
    """1×1 (C_in → mid) → BN → ReLU → 3×3 (mid → mid, grouped when ``group_size`` > 0) → BN → ReLU → 1×1
    (mid → C_out), ``mid = C_out // bottleneck``."""

    def __init__(self, cin: int, cout: int, stride: int, bottleneck: int, group_size: int = 0) -> None:
        mid = cout // bottleneck
        groups = mid // group_size if group_size else 1
        super().__init__(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
        )  # fmt: skip


def cheap_conv(cin: int, cout: int, stride: int, *, group_size: int = 0, bottleneck: int = 1) -> nn.Module:
    """The cheap substitute of a 3×3 conv ``cin → cout`` (see the module docstring)."""
    if bottleneck > 1:
        return CheapBottleneck(cin, cout, stride, bottleneck, group_size)
    if group_size:
        return GroupedPointwise(cin, cout, stride, group_size)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class MoonshineWRN(WideResNet):
    """WRN-depth-widen whose blocks use :func:`cheap_conv` (``group_size``, ``bottleneck``)."""

    def __init__(self, depth: int = 40, widen: int = 2, group_size: int = 8, bottleneck: int = 2,
                 num_classes: int = 100, in_channels: int = 3) -> None:
        conv = partial(cheap_conv, group_size=group_size, bottleneck=bottleneck)
        super().__init__(depth, widen, 0.0, num_classes=num_classes, in_channels=in_channels, conv=conv)
        self.group_size, self.bottleneck = group_size, bottleneck


def _build(name: str, num_classes: int, in_channels: int, depth, widen, group_size, bottleneck) -> MoonshineWRN:
    check_int("depth", depth, minimum=10, model=name)
    if (depth - 4) % 6 != 0:
        raise ConfigError(f"model {name!r}: depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
    check_int("widen", widen, model=name)
    check_int("group_size", group_size, minimum=0, model=name)
    check_int("bottleneck", bottleneck, model=name)
    widths = [16 * widen, 32 * widen, 64 * widen]
    if bottleneck > 1 and min(widths) // bottleneck < 1:
        raise ConfigError(f"model {name!r}: bottleneck {bottleneck} leaves no channels in {min(widths)}-wide blocks")
    # every 3x3 conv that gets grouped: its channel count must split into groups of group_size
    grouped = ([w // bottleneck for w in widths] if bottleneck > 1 else [16] + widths) if group_size else []
    for c in grouped:
        if c % group_size:
            raise ConfigError(f"model {name!r}: group_size {group_size} must divide every grouped conv's channels "
                              f"{sorted(set(grouped))}")
    return MoonshineWRN(depth, widen, group_size, bottleneck, num_classes=num_classes, in_channels=in_channels)


@MODELS.register(
    "moonshine",
    family="moonshine",
    builder=True,
    description="Moonshine (Crowley et al. 2018): a WRN whose 3x3 convs are cheap (grouped/bottleneck) ones",
)
def moonshine(num_classes: int = 100, in_channels: int = 3, depth: int = 40, widen: int = 2, group_size: int = 8,
              bottleneck: int = 2) -> MoonshineWRN:
    return _build("moonshine", num_classes, in_channels, depth, widen, group_size, bottleneck)


@MODELS.register("moonshine_40_2_g8b2", family="moonshine",
                 description="WRN-40-2 with G(8)B(2) blocks: 1x1 to half width, 3x3 in groups of 8, 1x1 up")
def moonshine_40_2_g8b2(num_classes: int = 100, in_channels: int = 3) -> MoonshineWRN:
    return _build("moonshine_40_2_g8b2", num_classes, in_channels, 40, 2, 8, 2)


@MODELS.register("moonshine_40_2_b4", family="moonshine",
                 description="WRN-40-2 with B(4) blocks: 1x1 to a quarter width, full 3x3, 1x1 up")
def moonshine_40_2_b4(num_classes: int = 100, in_channels: int = 3) -> MoonshineWRN:
    return _build("moonshine_40_2_b4", num_classes, in_channels, 40, 2, 0, 4)


@MODELS.register("moonshine_40_2_dconv", family="moonshine",
                 description="WRN-40-2 with DConv blocks: depthwise 3x3 then pointwise 1x1")
def moonshine_40_2_dconv(num_classes: int = 100, in_channels: int = 3) -> MoonshineWRN:
    return _build("moonshine_40_2_dconv", num_classes, in_channels, 40, 2, 1, 1)


@MODELS.register("moonshine_16_2_g4b2", family="moonshine",
                 description="WRN-16-2 with G(4)B(2) blocks (a small Moonshine student for digits)")
def moonshine_16_2_g4b2(num_classes: int = 100, in_channels: int = 3) -> MoonshineWRN:
    return _build("moonshine_16_2_g4b2", num_classes, in_channels, 16, 2, 4, 2)
