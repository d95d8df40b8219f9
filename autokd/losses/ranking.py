"""Listwise transfer of cross-sample similarity rankings (DarkRank)."""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register
from .feature import fp32
from .relation import embedding_of

__all__ = ["DarkRank", "darkrank_scores", "plackett_luce_log_prob", "darkrank_hard_loss", "darkrank_soft_loss"]


def darkrank_scores(emb: Tensor, scale: float, power: float) -> Tensor:
    """(N, N) scores S[q, i] = −(scale · ‖e_q − e_i‖²)^power of L2-normalised embeddings (the official code scales
    the normalised features by √scale and raises their *squared* distance to ``power``). Squared distances of
    unit vectors are 2 − 2·cos, clamped at 1e-12 so that powers below 1 keep finite gradients."""
    e = F.normalize(emb.float().flatten(1), dim=1)
    d = (2.0 - 2.0 * e @ e.t()).clamp_min(1e-12)
    return -(scale * d).pow(power)


def plackett_luce_log_prob(scores: Tensor) -> Tensor:
    """log P(order) under the Plackett-Luce model for ``scores`` (..., L) already in the order to score:
    Σ_i [s_i − log Σ_{k ≥ i} exp s_k], computed in log space."""
    tail_lse = torch.logcumsumexp(scores.flip(-1), dim=-1).flip(-1)
    return (scores - tail_lse).sum(-1)


def _others_by_teacher(t_scores: Tensor) -> Tensor:
    """For each query row, the indices of the other samples from the teacher's most to least similar."""
    n = t_scores.shape[0]
    masked = t_scores.masked_fill(torch.eye(n, dtype=torch.bool, device=t_scores.device), float("-inf"))
    return masked.argsort(dim=1, descending=True)[:, : n - 1]


@fp32
def darkrank_hard_loss(student_emb: Tensor, teacher_emb: Tensor, scale: float = 3.5, power: float = 2.0) -> Tensor:
    """Hard DarkRank (ListMLE): −log P_student(the teacher's ranking of all other samples), mean over queries."""
    s = darkrank_scores(student_emb, scale, power)
    with torch.no_grad():
        order = _others_by_teacher(darkrank_scores(teacher_emb, scale, power))
    return -plackett_luce_log_prob(s.gather(1, order)).mean()


@fp32
def darkrank_soft_loss(student_emb: Tensor, teacher_emb: Tensor, scale: float = 3.5, power: float = 2.0,
                       list_length: int = 4) -> Tensor:
    """Soft DarkRank (ListNet): over the ``list_length`` samples the teacher ranks closest to each query, the
    cross-entropy −Σ_π P_t(π) log P_s(π) between the teacher's and the student's Plackett-Luce distributions over
    all L! orderings; mean over queries."""
    s = darkrank_scores(student_emb, scale, power)
    t = darkrank_scores(teacher_emb, scale, power).detach()
    length = min(int(list_length), s.shape[0] - 1)
    top = _others_by_teacher(t)[:, :length]  # (N, L)
    perms = torch.tensor(list(itertools.permutations(range(length))), device=s.device)  # (L!, L)
    idx = top[:, perms]  # (N, L!, L)
    log_p_s = plackett_luce_log_prob(s.unsqueeze(1).expand(-1, perms.shape[0], -1).gather(2, idx))
    log_p_t = plackett_luce_log_prob(t.unsqueeze(1).expand(-1, perms.shape[0], -1).gather(2, idx))
    return -(log_p_t.exp() * log_p_s).sum(1).mean()


@register
class DarkRank(DistillLoss):
    """Chen, Wang & Zhang AAAI 2018, DarkRank: Accelerating Deep Metric Learning via Cross Sample Similarities
    Transfer (official code: TuSimple/DarkRank, ``PYOP/listnet_loss.py`` and ``PYOP/listmle_loss.py``).

    Each sample of the batch is a query; the others are ranked by their similarity to it,
    S(q, i) = −(α · ‖e_q − e_i‖²)^β on L2-normalised embeddings (``Outputs.embedding``; the flattened last map
    when a model has none). The official code scales the normalised features by √α (``embedding_l2_norm``) and
    raises the *squared* distance to β (``score_power``); the paper writes −α‖·‖^β. We follow the code.

    - ``variant="soft"`` (ListNet, the paper's best): the ``list_length`` samples the teacher ranks closest;
      −Σ_π P_t(π) log P_s(π) over all their orderings under the Plackett-Luce model (a cross-entropy: the KL up
      to the teacher's constant entropy), as the official ``listnetLoss``.
    - ``variant="hard"`` (ListMLE): −log P_s(π_t), the student's probability of the teacher's full ranking of
      the other samples (only the ranking of the teacher is used).

    Mean over queries. The official code uses only the first half of each batch as queries (its sampler pairs
    images of one identity there); every sample is a query here. Computed in log space (the official hard loss
    adds 1e-12 inside the log; its analytic gradient is the exact one, which log space keeps).

    Weight: the official command uses α = 3.5, β = 2, list length 4 and loss weight 16. That weight is a gradient
    scale that MXNet's ``rescale_grad = 1/batch`` divides by the batch size (8) while the classification
    loss's summed gradient becomes its mean: relative to mean CE the weight is 16/8 = 2, our ``default_weight``.
    """

    name = "darkrank"
    paper = ("Chen, Wang & Zhang AAAI 2018, DarkRank: Accelerating Deep Metric Learning via Cross Sample "
             "Similarities Transfer (arXiv:1707.01220)")
    level = "relation"
    needs = frozenset({"embedding"})
    hparams = {
        "variant": HParam("soft", kind="categorical", choices=("soft", "hard"),
                          doc="soft: ListNet over the teacher's top list; hard: ListMLE of its full ranking"),
        "scale": HParam(3.5, 0.5, 10.0, log=True, doc="α, multiplies the squared distance"),
        "power": HParam(2.0, 0.5, 3.0, doc="β, power of the scaled squared distance"),
        "list_length": HParam(4, 2, 5, kind="int", doc="soft variant: samples ranked per query (L! orderings)"),
    }
    default_weight = 2.0
    weight_range = (0.2, 20.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.list_length > 6:
            raise ConfigError(f"loss 'darkrank': list_length must be <= 6 (L! orderings), got {self.list_length}")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        s, t = embedding_of(student), embedding_of(teacher)
        if s.shape[0] < 2:
            return s.sum() * 0.0
        if self.variant == "hard":
            return darkrank_hard_loss(s, t, self.scale, self.power)
        return darkrank_soft_loss(s, t, self.scale, self.power, self.list_length)
