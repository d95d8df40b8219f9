"""Pruning-at-initialisation saliencies summed over a network, as zero-cost proxies (Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021): ``snip``, ``grasp``, ``grad_norm``, ``fisher``.

Conventions shared by all four: ``L`` is the batch-mean cross-entropy of the student's logits on the one
labelled batch; the scored parameters are the weights of every conv and linear layer (not biases, not BN);
BN runs in train mode (batch statistics), on the proxy's private copy of the student. Transformers: linear
layers act on token sequences (N, L, D), whose channel axis is the last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import PROXIES, Proxy, outputs_of, prunable_layers

__all__ = ["Snip", "GradNorm", "Grasp", "Fisher"]


def _ce(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(outputs_of(model, x).logits, y)


def _weight_grads(model: nn.Module, x: Tensor, y: Tensor, create_graph: bool = False):
    layers = prunable_layers(model)
    weights = [m.weight for m in layers]
    grads = torch.autograd.grad(_ce(model, x, y), weights, create_graph=create_graph, allow_unused=True)
    grads = tuple(torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads, strict=True))
    return weights, grads


@PROXIES.register("snip", needs_teacher=False, bn_mode="train",
                  paper="Lee et al., SNIP, ICLR 2019; Abdelfattah et al., ICLR 2021")
class Snip(Proxy):
    """SNIP: ``Σ_layers Σ |θ ⊙ ∂L/∂θ|``. Sign: as published (higher = more connection sensitivity = better).
    BN: train mode."""

    name = "snip"
    paper = "Lee et al., ICLR 2019"

    def score(self, model, teacher, x, y) -> float:
        weights, grads = _weight_grads(model, x, y)
        return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads, strict=True)))


@PROXIES.register("grad_norm", needs_teacher=False, bn_mode="train",
                  paper="Abdelfattah et al., Zero-Cost Proxies for Lightweight NAS, ICLR 2021")
class GradNorm(Proxy):
    """Gradient norm: ``Σ_layers ‖∂L/∂W‖_F`` (per-layer Frobenius norms, summed). Sign: as published
    (higher = better). BN: train mode."""

    name = "grad_norm"
    paper = "Abdelfattah et al., ICLR 2021"

    def score(self, model, teacher, x, y) -> float:
        _, grads = _weight_grads(model, x, y)
        return float(sum(g.norm() for g in grads))


@PROXIES.register("grasp", needs_teacher=False, bn_mode="train",
                  paper="Wang et al., GraSP, ICLR 2020; Abdelfattah et al., ICLR 2021")
class Grasp(Proxy):
    """GraSP: ``Σ_layers Σ (-θ ⊙ H g)``, ``g = ∂L/∂θ``, ``H g`` by double back-propagation.

    Sign: Abdelfattah et al.'s network-level aggregation of GraSP's saliency ``-θ ⊙ Hg`` (kept as they
    report it; its correlation with accuracy is weak in their study and may be negative here). BN: train
    mode. Attention runs on the math kernel of ``F.scaled_dot_product_attention`` (the fused CPU/GPU kernels
    have no second derivative; the math kernel computes the same attention).
    """

    name = "grasp"
    paper = "Wang et al., ICLR 2020"

    def score(self, model, teacher, x, y) -> float:
        with sdpa_kernel([SDPBackend.MATH]):
            return self._score(model, x, y)

    def _score(self, model, x, y) -> float:
        weights, g0 = _weight_grads(model, x, y)
        g0 = [g.detach() for g in g0]
        _, g1 = _weight_grads(model, x, y, create_graph=True)
        z = sum((a * b).sum() for a, b in zip(g1, g0, strict=True))
        hg = torch.autograd.grad(z, weights, allow_unused=True)
        return float(sum((-w.detach() * h).sum() for w, h in zip(weights, hg, strict=True) if h is not None))


@PROXIES.register("fisher", needs_teacher=False, bn_mode="train",
                  paper="Theis et al. 2018; Turner et al., BlockSwap, ICLR 2020; Abdelfattah et al. 2021")
class Fisher(Proxy):
    """Fisher: for every output channel ``c`` of every conv/linear layer, with activation ``a`` and
    ``g = ∂L/∂a``: ``0.5 · mean_n (Σ_{h,w} a_{nchw} g_{nchw})²``, summed over channels and layers.

    Sign: as published (higher = better). BN: train mode. Activations are the conv/linear outputs,
    captured by forward hooks on the private copy; the channel axis is 1 for convs and the last axis for linear
    layers (on token sequences (N, L, D) the sum runs over the L tokens).
    """

    name = "fisher"
    paper = "Turner et al., ICLR 2020"

    def score(self, model, teacher, x, y) -> float:
        acts: list[Tensor] = []

        def keep(m, _inp, out):
            if isinstance(out, Tensor) and out.requires_grad:
                acts.append(out.movedim(-1, 1) if isinstance(m, nn.Linear) and out.dim() > 2 else out)

        handles = [m.register_forward_hook(keep) for m in prunable_layers(model)]
        try:
            loss = _ce(model, x, y)
        finally:
            for h in handles:
                h.remove()
        if not acts:
            return 0.0
        grads = torch.autograd.grad(loss, acts, allow_unused=True)
        total = 0.0
        for a, g in zip(acts, grads, strict=True):
            if g is None:
                continue
            prod = (a.detach() * g).double()
            per = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
            total += float(0.5 * per.pow(2).mean(0).sum())
        return total
