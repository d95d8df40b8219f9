"""Fake-quantized students for quantization-aware training (QAT), built from ``torch.ao.quantization`` parts.

What a ``bits``-bit integer network computes, simulated in float with straight-through gradients:

- **weights**: every ``nn.Conv2d`` and ``nn.Linear`` becomes a ``torch.ao.nn.qat`` module whose weight passes
  through a ``FakeQuantize`` (per output channel, symmetric, integers in [-2^(b-1), 2^(b-1) - 1], scales from a
  moving-average min/max observer);
- **activations**: the *input* of each of those layers passes through a ``FakeQuantize`` (per tensor, affine,
  integers in [0, 2^b - 1] with a zero point, moving-average min/max observer), i.e. every layer multiplies
  b-bit activations by b-bit weights. Post-ReLU inputs get zero point 0 and the grid {0, s, ..., (2^b - 1)s}.

Conventions: observers update in train mode only (``model.train()`` / ``eval()`` switch them), so evaluation
data never moves the scales; ``calibrate`` sets them once from a batch before training. BatchNorm layers stay in
float and are not folded into the convolutions (an integer deployment would fold them, which changes the weight
grid); token embedding tables stay in float. Used for Quantization Mimic (Wei et al., ECCV 2018), whose student
is a quantized network: see :class:`autokd.losses.quantization.QuantizationMimic`.
"""

from __future__ import annotations

import torch
import torch.ao.nn.qat as qat
from torch import Tensor, nn
from torch.ao.quantization import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
)

from ..hparams import HParam

__all__ = ["QuantConv2d", "QuantLinear", "fake_quantize", "calibrate", "qconfig", "QUANTIZE_HPARAMS",
           "quantized_bits"]

QUANTIZE_HPARAMS = {
    "bits": HParam(8, 2, 8, kind="int", valid="[2, 8]",
                   doc="bits of the student's weights and layer inputs (activations)"),
}


def qconfig(bits: int) -> QConfig:
    """``bits``-bit fake quantization: per-tensor affine unsigned activations, per-channel symmetric weights."""
    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2**bits - 1,
                                 dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                    quant_min=-(2 ** (bits - 1)), quant_max=2 ** (bits - 1) - 1,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=act, weight=weight)


class _QuantInput:
    """Mixin: fake-quantize the layer's input, and let observers learn only in train mode."""

    input_fake_quant: FakeQuantize
    weight_fake_quant: FakeQuantize

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        for fq in (self.input_fake_quant, self.weight_fake_quant):
            fq.enable_observer(mode)
        return self


class QuantConv2d(_QuantInput, qat.Conv2d):
    """``nn.Conv2d`` with fake-quantized input and weight."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.input_fake_quant(x))


class QuantLinear(_QuantInput, qat.Linear):
    """``nn.Linear`` with fake-quantized input and weight."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.input_fake_quant(x))


def _swap(module: nn.Module, cfg: QConfig) -> nn.Module:
    if type(module) is nn.Conv2d:
        q: nn.Module = QuantConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                                   padding=module.padding, dilation=module.dilation, groups=module.groups,
                                   bias=module.bias is not None, padding_mode=module.padding_mode, qconfig=cfg)
    elif type(module) is nn.Linear:
        q = QuantLinear(module.in_features, module.out_features, bias=module.bias is not None, qconfig=cfg)
    else:
        return module
    q.weight = module.weight  # the same Parameter: initialisation (e.g. Net2Net) is kept
    q.bias = module.bias
    q.input_fake_quant = cfg.activation()
    q.to(module.weight.device)
    q.train(module.training)
    return q


def fake_quantize(model: nn.Module, bits: int) -> nn.Module:
    """Swap every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` (in place; returned) for its fake-quantized version
    (see the module docstring); records ``model.quantize_bits``."""
    cfg = qconfig(int(bits))

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            swapped = _swap(child, cfg)
            if swapped is not child:
                setattr(parent, name, swapped)
            else:
                visit(child)

    visit(model)
    model.quantize_bits = int(bits)
    return model


def quantized_bits(model: nn.Module) -> int | None:
    """The bits :func:`fake_quantize` gave ``model`` (``None`` for a float model)."""
    return getattr(model, "quantize_bits", None)


@torch.no_grad()
def calibrate(model: nn.Module, x: Tensor) -> None:
    """Set every quantizer's range from one forward of ``x`` in eval mode (BatchNorm statistics untouched);
    the train/eval modes are restored."""
    modes = [(m, m.training) for m in model.modules()]
    fqs = [m for m in model.modules() if isinstance(m, FakeQuantize)]
    try:
        model.eval()
        for fq in fqs:
            fq.enable_observer(True)
        model(x)
    finally:
        for m, training in modes:
            m.training = training
        for m in model.modules():
            if isinstance(m, _QuantInput):
                m.input_fake_quant.enable_observer(m.training)
                m.weight_fake_quant.enable_observer(m.training)
