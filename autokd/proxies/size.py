"""Size baselines: parameter count and FLOPs. Cheap, data-free and strong: every proxy must beat them."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .base import PROXIES, Proxy

__all__ = ["Params", "Flops", "count_flops"]


@PROXIES.register("params", needs_teacher=False, bn_mode="n/a", paper="baseline: parameter count")
class Params(Proxy):
    """Number of parameters (shared ones once). Sign: bigger = predicted better. Nothing is run."""

    name = "params"
    paper = "baseline"
    bn_mode = "n/a"
    copy_student = False

    def score(self, model: nn.Module, teacher, x, y) -> float:
        return float(sum(p.numel() for p in model.parameters()))


def count_flops(model: nn.Module, input_shape: tuple[int, ...], device=None) -> int:
    """FLOPs of one forward pass on ONE sample of ``input_shape`` (C, H, W), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add; convs, matmuls, linears and fused
    attention, see :func:`autokd.models.base.flop_counter`; element-wise ops not counted). Runs on a copy in
    eval mode."""
    from ..models.base import flop_counter

    m = copy.deepcopy(model).eval()
    dev = device if device is not None else next((p.device for p in m.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in m.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros((1, *input_shape), device=dev, dtype=dtype)
    with torch.no_grad(), flop_counter() as fc:
        m(x)
    return int(fc.get_total_flops())


@PROXIES.register("flops", needs_teacher=False, bn_mode="eval", paper="baseline: FLOPs per image")
class Flops(Proxy):
    """FLOPs per image (:func:`count_flops`). Sign: more compute = predicted better. BN: eval mode (copy)."""

    name = "flops"
    paper = "baseline"
    bn_mode = "eval"
    copy_student = False

    def score(self, model: nn.Module, teacher, x, y) -> float:
        return float(count_flops(model, tuple(x.shape[1:]), device=x.device))
