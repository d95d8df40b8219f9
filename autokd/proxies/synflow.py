"""SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
flow", NeurIPS 2020), summed over a network as in Abdelfattah et al. (ICLR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from .base import PROXIES, Proxy, outputs_of

__all__ = ["SynFlow", "remove_batchnorm"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def remove_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm module of ``model`` (in place) by ``nn.Identity``; returns how many."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BN):
                setattr(parent, name, nn.Identity())
                n += 1
    return n


@PROXIES.register("synflow", needs_teacher=False, bn_mode="removed",
                  paper="Tanaka et al., SynFlow, NeurIPS 2020; Abdelfattah et al., ICLR 2021")
class SynFlow(Proxy):
    """SynFlow: ``R = 1ᵀ f_{|θ|}(1)`` (the summed logits of the network with absolute weights on an all-ones
    input); score ``Σ_params Σ |θ ⊙ ∂R/∂θ|`` over every remaining parameter (weights and biases).

    Known pitfalls handled on the private copy: BatchNorm is removed (``bn_mode="removed"``: BN would
    re-normalise the all-ones signal, and in train mode the batch of identical inputs has zero variance);
    the copy runs in float64 (the product of many absolute weights overflows float32 for deep nets);
    parameters are replaced by their absolute values (the original restores the signs afterwards — the copy
    is simply discarded, so the caller's weights never change sign); the input is ONE all-ones sample shaped
    like the batch (data-free, labels unused). Sign: as published (higher = more synaptic flow = better).
    """

    name = "synflow"
    paper = "Tanaka et al., NeurIPS 2020"
    bn_mode = "removed"

    def score(self, model: nn.Module, teacher, x, y) -> float:
        remove_batchnorm(model)
        model.double().eval()
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
        params = [p for p in model.parameters() if p.requires_grad]
        ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
        r = outputs_of(model, ones).logits.sum()
        grads = torch.autograd.grad(r, params, allow_unused=True)
        pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
        return float(sum((p.detach() * g).abs().sum() for p, g in pairs))
