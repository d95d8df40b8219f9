"""Quantization Mimic (Wei, Pan, Qin, Ouyang & Yan, "Quantization Mimic: Towards Very Tiny CNN for Object
Detection", ECCV 2018, arXiv:1805.02152).

The paper trains a quantized student to mimic a quantized teacher: both networks' feature maps pass through
the same uniform quantizer, and the mimic term is an L2 between the teacher's feature and the student's
feature after a regression layer (Li et al. CVPR 2017's mimic), on the features of the region proposals:
L_m = 1/(2N) Σ_i ‖Q(f_t^i) − Q(r(f_s^i))‖²₂. For classification the whole last feature map of an image is
its one "proposal" (N = batch size). No official code was released; conventions here:

- quantizer: uniform, ``bits`` bits, per tensor, affine over [min, max] of the *teacher's* map (post-ReLU
  maps give zero point 0 and the grid {0, s, ..., (2^b − 1)s}); the range is tracked by a
  ``torch.ao.quantization.MovingAverageMinMaxObserver`` updated in train mode. The student's regressed map is
  quantized on the same grid, so both sides take values in the same finite set (the paper's point: the
  quantized teacher leaves the student a smaller search space).
- simplification: the paper fine-tunes the teacher with quantized feature maps before mimicking; here the
  trained full-precision teacher's maps are quantized on the fly (no teacher fine-tuning).
- gradient: straight-through (Bengio et al. 2013) — the value is quantized, the gradient passes as the
  identity, so regressed values outside the teacher's range still receive a gradient.
- regression layer r: a 1×1 conv + BN to the teacher's channels (the common connector), spatial size
  matched (pool / bilinear). Default pair: the deepest stages (the map the proposals are pooled from).
- the student network itself is quantized through the recipe (``student.quantize: {bits: b}``), which makes
  its own activations and weights b-bit; this term works with a float student too.

Weight: the paper's λ is not given for this sum; the per-sample sum of squares over a (C, H, W) map is
large, so the default is 0.05 (search range 0.001-1, log).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.quantization import MovingAverageMinMaxObserver

from ..models.connectors import FeatureConnector, feature_pairs_shapes
from ..outputs import Outputs
from .base import DistillLoss, HParam, register
from .feature import _require_shapes, resolve_checked_pairs

__all__ = ["QuantizationMimic", "quantize_like", "quantization_mimic_loss"]


def quantize_like(x: Tensor, scale: Tensor, zero_point: Tensor, bits: int) -> Tensor:
    """``x`` on the uniform grid ``(q − zero_point)·scale``, ``q ∈ {0, ..., 2^bits − 1}`` (round to nearest,
    clamp), with a straight-through (identity) gradient."""
    q = torch.fake_quantize_per_tensor_affine(x.detach().float(), scale.float(), zero_point.int(), 0, 2**bits - 1)
    return x + (q - x).detach()


def quantization_mimic_loss(student_map: Tensor, teacher_map: Tensor, scale: Tensor, zero_point: Tensor,
                            bits: int) -> Tensor:
    """½ · Σ over (C, H, W) of (Q(student) − Q(teacher))², averaged over the batch (the paper's 1/(2N) Σ‖·‖²)."""
    diff = quantize_like(student_map.float(), scale, zero_point, bits) - quantize_like(
        teacher_map.float(), scale, zero_point, bits)
    return 0.5 * diff.pow(2).flatten(1).sum(1).mean()


@register
class QuantizationMimic(DistillLoss):
    """Wei et al. ECCV 2018, Quantization Mimic: L2 between the quantized teacher map and the quantized
    regressed student map (see the module docstring for the conventions; no official code).

    Weight: 0.05 by default (range 0.001-1): the term is a per-sample sum over the map, not a mean.
    """

    name = "quantization_mimic"
    paper = "Wei et al. ECCV 2018, Quantization Mimic: Towards Very Tiny CNN for Object Detection (arXiv:1805.02152)"
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {"bits": HParam(4, 2, 8, kind="int", valid="[2, 8]", doc="bits of the shared feature-map quantizer")}
    default_weight = 0.05
    weight_range = (0.001, 1.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        _require_shapes(self)
        self.layer_pairs = resolve_checked_pairs(self, "last")
        self.connectors = nn.ModuleList(
            FeatureConnector(s, t, always_conv=True)
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs)
        )
        self.observers = nn.ModuleList(
            MovingAverageMinMaxObserver(quant_min=0, quant_max=2**self.bits - 1, dtype=torch.quint8)
            for _ in self.layer_pairs
        )

    def _qparams(self, i: int, teacher_map: Tensor) -> tuple[Tensor, Tensor]:
        obs = self.observers[i]
        if self.training or not torch.isfinite(obs.min_val):  # eval never moves the range, but needs one
            obs(teacher_map.detach().float())
        scale, zero_point = obs.calculate_qparams()
        return scale.to(teacher_map.device), zero_point.to(teacher_map.device)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        total = torch.zeros((), device=student.logits.device)
        for i, (conn, (ti, si)) in enumerate(zip(self.connectors, self.layer_pairs, strict=True)):
            t_map = teacher.feats[ti]
            scale, zero_point = self._qparams(i, t_map)
            total = total + quantization_mimic_loss(conn(student.feats[si]), t_map, scale, zero_point, self.bits)
        return total
