"""Self-distillation through auxiliary classifiers on the student's shallow stages: BYOT and MSD."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distiller import Step
from ..hparams import HParam
from ..models import shapes as probe_shapes
from ._heads import BottleneckBranch, StageBranch, shallow_stages
from ._helpers import soft_kl
from .base import Scheme, register

__all__ = ["SelfDistill", "byot_head_loss", "feature_l2"]


def feature_l2(f: Tensor, target: Tensor) -> Tensor:
    """``‖F_i − F_deepest‖²`` per sample (summed over the feature), batch mean; the target is detached."""
    return (f.float() - target.detach().float()).pow(2).sum(1).mean()


def byot_head_loss(logits: Tensor, feature: Tensor, y: Tensor, deep_logits: Tensor, deep_feature: Tensor, *,
                   alpha: float, temperature: float, feature_weight: float) -> Tensor:
    """One shallow classifier's BYOT loss: ``(1−α)·CE(z_i, y) + α·T²·KL(softmax(z_C/T) ‖ softmax(z_i/T))
    + λ·‖F_i − F_C‖²`` (KL batch-mean; the deepest classifier's logits z_C and feature F_C detached)."""
    return ((1.0 - alpha) * F.cross_entropy(logits.float(), y)
            + alpha * soft_kl(logits, deep_logits.detach(), temperature)
            + feature_weight * feature_l2(feature, deep_feature))


@register
class SelfDistill(Scheme):
    """Self-distillation with auxiliary classifiers, no teacher needed: ``variant: byot`` — Be Your Own Teacher
    (Zhang et al., ICCV 2019, "Be Your Own Teacher: Improve the Performance of Convolutional Neural Networks via
    Self Distillation"); ``variant: msd`` — MSD (Luan et al., 2019, "MSD: Multi-Self-Distillation Learning via
    Multi-classifiers within Deep Neural Networks").

    Every shallow stage of the student (all stages but the deepest; the stem left out when the model has three
    stages or more, :func:`~autokd.schemes._heads.shallow_stages`) gets a classifier branch whose pooled output
    F_i has the deepest stage's width (byot: BYOT's bottleneck, :class:`BottleneckBranch`; msd: MSD's
    "sampling-based" branch of conv blocks mimicking the later stages, :class:`StageBranch`). The deepest
    classifier is the student's own; its CE is the recipe's (``ce_weight`` × CE — the paper's (1−α) on it is
    the recipe's ``ce_weight``). Logged as ``self_distill``, summed over the shallow classifiers i:

    - byot: ``(1−α)·CE(z_i, y) + α·T²·KL(softmax(z_C/T) ‖ softmax(z_i/T)) + λ·‖F_i − F_C‖²`` (:func:`byot_head_loss`,
      z_C the deepest logits and F_C the student's embedding, both detached);
    - msd: every classifier, the deepest included, learns from all the others: the KL term of classifier i is
      the mean over j ≠ i of ``T²·KL(softmax(z_j/T) ‖ softmax(z_i/T))`` (targets detached); the feature term
      ``λ_e·‖F_i − F_C‖²`` is cosine-annealed over the epochs, ``λ_e = λ·½(1 + cos(π e / E))``.

    KLs are batch-mean × T²; ``‖·‖²`` is the squared L2 norm per sample, batch mean. Defaults α = 0.1, T = 3
    follow the MSD authors' public BYOT code (BYOT's authors released none); that code writes the KD term as a
    soft-target cross-entropy (same gradient as the KL) and sums the feature loss over the batch (λ = 1e-6
    there); here the feature loss is a batch mean, λ = 0.03. The exported model is the student (the
    auxiliary branches are dropped).
    """

    name = "self_distill"
    paper = ("Zhang et al., ICCV 2019, Be Your Own Teacher (byot); Luan et al., 2019, MSD: Multi-Self-Distillation "
             "Learning via Multi-classifiers within Deep Neural Networks (msd)")
    hparams = {
        "variant": HParam("byot", choices=("byot", "msd"), kind="categorical"),
        "alpha": HParam(0.1, 0.0, 0.9, valid="[0, 1]", doc="weight of the KL terms; (1-alpha) on the branch CEs"),
        "temperature": HParam(3.0, 1.0, 8.0),
        "feature_weight": HParam(0.03, 1e-4, 1.0, log=True, valid=">= 0", doc="λ of the feature hint"),
    }
    student_outputs = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.branches = nn.ModuleList()
        self.stages: list[int] = []
        self._epoch = (0, 1)

    def setup(self, *, distiller, data, device, **context) -> None:
        shapes = probe_shapes(distiller.student, tuple(data.input_shape))
        self.stages = shallow_stages(shapes)
        k = data.num_classes
        if self.params["variant"] == "byot":
            branches = [BottleneckBranch(shapes, i, k) for i in self.stages]
        else:
            branches = [StageBranch(shapes, i, k) for i in self.stages]
        self.branches = nn.ModuleList(branches).to(device).train()

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.branches.parameters())

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.branches.train()
        self._epoch = (epoch, total_epochs)

    def feature_weight(self) -> float:
        lam = self.params["feature_weight"]
        if self.params["variant"] == "msd":
            epoch, total = self._epoch
            lam *= 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, total)))
        return lam

    def heads(self, step: Step) -> tuple[list[Tensor], list[Tensor]]:
        """The shallow classifiers' logits and pooled features."""
        feats = [b.features(step.student.feats[i]) for b, i in zip(self.branches, self.stages, strict=True)]
        return [b.fc(f) for b, f in zip(self.branches, feats, strict=True)], feats

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        a, t, lam = self.params["alpha"], self.params["temperature"], self.feature_weight()
        logits, feats = self.heads(step)
        deep_z, deep_f = step.student.logits, step.student.embedding
        if self.params["variant"] == "byot":
            total = sum(byot_head_loss(z, f, y, deep_z, deep_f, alpha=a, temperature=t, feature_weight=lam)
                        for z, f in zip(logits, feats, strict=True))
            return {"self_distill": total}
        cohort = logits + [deep_z]
        total = torch.zeros((), device=deep_z.device)
        for i, z in enumerate(cohort):
            others = [o.detach() for j, o in enumerate(cohort) if j != i]
            kl = sum(soft_kl(z, o, t) for o in others) / len(others)
            if i < len(logits):
                total = total + (1.0 - a) * F.cross_entropy(z.float(), y) + a * kl + lam * feature_l2(feats[i], deep_f)
            else:
                total = total + a * kl
        return {"self_distill": total}
