"""Zen-score (Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition", ICCV 2021)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import PROXIES, Proxy, outputs_of

__all__ = ["Zen", "gaussian_init"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def gaussian_init(model: nn.Module) -> None:
    """Zen-NAS's re-initialisation: conv/linear weights ~ N(0, 1), biases 0, BN affine (1, 0)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _BN) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


@PROXIES.register("zen", needs_teacher=False, bn_mode="train",
                  paper="Lin et al., Zen-NAS, ICCV 2021")
class Zen(Proxy):
    """Zen-score: ``log E_n ‖f(x) - f(x + αε)‖₁ + Σ_BN log sqrt(mean_c σ²_c)`` with ``f`` the last
    (pre-pooling) feature map, ``x, ε ~ N(0, 1)`` shaped like the batch, ``α = 0.01``, weights re-drawn from
    N(0, 1) (on the private copy) and ``σ²_c`` the batch variance each BN normalises away.

    Sign: as published (higher = more expressive = better). BN: train mode (the BN term reads the batch
    variances of the clean pass). Data-free: the batch only gives the input shape; labels unused. Models
    without BN (transformers normalise with LayerNorm) get no BN term, so their scores compare with each other,
    not with BN networks'.
    """

    name = "zen"
    paper = "Lin et al., ICCV 2021"
    alpha = 0.01

    def score(self, model: nn.Module, teacher, x: Tensor, y: Tensor) -> float:
        gaussian_init(model)
        z = torch.randn(x.shape, device=x.device, dtype=x.dtype)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype)
        variances: list[float] = []

        def bn_var(_m, inp):
            t = inp[0]
            dims = [d for d in range(t.dim()) if d != 1]
            variances.append(float(t.double().var(dim=dims, unbiased=True).mean()))

        handles = [m.register_forward_pre_hook(bn_var) for m in model.modules() if isinstance(m, _BN)]
        try:
            with torch.no_grad():
                f = _feature(model, z)
        finally:
            for h in handles:
                h.remove()
        with torch.no_grad():
            f2 = _feature(model, z + self.alpha * eps)
        delta = (f.double() - f2.double()).abs().flatten(1).sum(1).mean()
        bn = sum(0.5 * math.log(max(v, 1e-300)) for v in variances)
        return float(torch.log(delta.clamp_min(1e-300))) + bn


def _feature(model: nn.Module, x: Tensor) -> Tensor:
    out = outputs_of(model, x)
    return out.feats[-1] if out.feats else out.logits
