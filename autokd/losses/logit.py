"""Logit-level distillation terms (the teacher's predictions)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = ["KD", "kd_loss"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch, times T².

    Computed in float32 from log-softmaxes (``log_target=True``) so it stays finite for large logits and
    under bf16 autocast. Note: PyTorch's default ``reduction='mean'`` would divide by N*K, not N.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * (temperature**2)


@register
class KD(DistillLoss):
    """Hinton et al. 2015. Batch-mean KL between temperature-softened distributions, scaled by T²."""

    name = "kd"
    paper = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531)"
    needs = frozenset({"logits"})
    hparams = {"temperature": HParam(4.0, 1.0, 20.0, log=True, doc="softmax temperature T")}

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return kd_loss(student.logits, teacher.logits, self.temperature)
