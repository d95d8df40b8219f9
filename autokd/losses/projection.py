"""Knowledge Projection (KPN): a learned projection of a teacher layer into a student layer."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..models.connectors import feature_pairs_shapes, match_spatial
from ..outputs import Outputs
from .base import DistillLoss, HParam, register
from .feature import _require_shapes, fp32, resolve_checked_pairs

__all__ = ["KPN", "TeacherProjection", "kpn_loss"]


class TeacherProjection(nn.Module):
    """Teacher map (C_t, H_t, W_t) -> the student's (C_s, H_s, W_s): resized to the student's size (adaptive
    average pooling to shrink, bilinear to grow), then a 1×1 convolution (the projection matrix, C_t -> C_s, with
    a bias) and a ReLU (the student's stage outputs are post-ReLU). PyTorch's default initialisation."""

    def __init__(self, teacher_shape, student_shape) -> None:
        super().__init__()
        self.out_hw = tuple(int(v) for v in student_shape[1:3])
        self.proj = nn.Conv2d(int(teacher_shape[0]), int(student_shape[0]), kernel_size=1)

    def forward(self, t: Tensor) -> Tensor:
        return F.relu(self.proj(match_spatial(t, self.out_hw)))


@fp32
def kpn_loss(projected_teacher: Tensor, student_feat: Tensor) -> Tensor:
    """Mean squared error between the projected teacher map and the student's injection-layer map."""
    return F.mse_loss(student_feat.float(), projected_teacher.float())


@register
class KPN(DistillLoss):
    """Zhang, Ning & He 2017, Knowledge Projection for Deep Neural Networks (arXiv:1710.09505; also titled
    "Knowledge Projection for Effective Design of Thinner and Faster Deep Neural Networks"). No official code.

    A projection matrix, learned with the student, maps the representation of an intermediate teacher layer into
    an intermediate ("injection") layer of the thinner student, and the student is regulated towards it:
    loss = MSE(ReLU(P · resize(t_l)), s_k), P a 1×1 convolution from the teacher's channels to the student's
    (:class:`TeacherProjection`), gradients to P and to the student (the teacher is frozen). The direction is
    the reverse of FitNets' (whose regressor maps the *student* onto the teacher's hint): the student's own
    features must be explainable by a projection of the teacher's.

    Choice of layers: the paper selects the teacher layer and the student injection layer adaptively during
    training, by evaluating a joint loss over candidates iteratively. In autokd that search is the search
    over layer pairs: give the term ``pairs: {search: {depths: [...], max: 1}}`` in a search space and the
    sampler chooses the (teacher stage, student stage) route by the trial's objective; with explicit ``pairs``
    each pair gets its own projection and the losses are summed. Default pair: the middle stage-aligned
    ``auto`` pair (as ``fitnet``).

    Simplification: this implements what the paper's abstract specifies (a projection, learned during training,
    from an intermediate teacher layer into an intermediate student layer, guiding the student; both layers
    chosen adaptively). The paper's further training details (how the projected features enter the student
    while it trains, any schedule of the projection term) are not reproduced: autokd models expose no entry into
    their upper stages, so the projection acts as a loss at the injection layer only. The ReLU after the
    projection and the MSE's mean reduction are autokd's choices for post-ReLU student maps.

    Weight: no reference value (no official code). 0.3 by default, chosen on the validation split of the digits
    benchmark (``benchmarks/feature_methods.py``, 3 seeds) among 0.1, 0.3, 1 and 3: 0.913 / 0.913 / 0.907 /
    0.888 against 0.907 for CE alone (the loss starts at ≈ 0.8, so 0.3 makes it ≈ 1/10 of the CE); searched
    in [0.01, 30].
    """

    name = "kpn"
    paper = "Zhang, Ning & He 2017, Knowledge Projection for Deep Neural Networks (arXiv:1710.09505)"
    level = "feature"
    needs = frozenset({"feats"})
    hparams: dict[str, HParam] = {}
    default_weight = 0.3
    weight_range = (0.01, 30.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        _require_shapes(self)
        pairs = resolve_checked_pairs(self, "auto")
        self.layer_pairs = pairs if self.pairs is not None else [pairs[(len(pairs) - 1) // 2]]
        self.projections = nn.ModuleList(
            TeacherProjection(t, s)
            for t, s in feature_pairs_shapes(self.student_shapes, self.teacher_shapes, self.layer_pairs)
        )

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        return sum(
            kpn_loss(proj(teacher.feats[ti]), student.feats[si])
            for proj, (ti, si) in zip(self.projections, self.layer_pairs, strict=True)
        )
