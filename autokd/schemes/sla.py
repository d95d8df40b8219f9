"""SLA: self-supervised label augmentation with a joint (class × rotation) classifier and self-distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ..models import shapes as probe_shapes
from ._heads import ROTATIONS, aggregate_joint, check_square, joint_labels, rotate4
from ._helpers import soft_kl
from .base import Scheme, register

__all__ = ["SLA", "RotationAggregated", "rotated_embeddings"]


def rotated_embeddings(student: nn.Module, x: Tensor, embedding0: Tensor) -> Tensor:
    """The student's embeddings of :func:`~autokd.schemes._heads.rotate4`'s batch (4N, D): rotation 0 is the
    already computed ``embedding0`` (the distiller's forward), rotations 1-3 one forward of the 3N others."""
    n = x.shape[0]
    others = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(1, ROTATIONS)])
    emb = student.forward_outputs(others).embedding.reshape(ROTATIONS - 1, n, -1)
    return torch.cat([embedding0.unsqueeze(0), emb]).transpose(0, 1).reshape(n * ROTATIONS, -1)


class RotationAggregated(nn.Module):
    """SLA+AG inference: the joint head on the student's embeddings of the four rotations of the input,
    aggregated (:func:`~autokd.schemes._heads.aggregate_joint`) into class logits — four student forwards."""

    def __init__(self, student: nn.Module, joint_head: nn.Linear) -> None:
        super().__init__()
        self.student, self.joint_head = student, joint_head

    def forward(self, x: Tensor) -> Tensor:
        return aggregate_joint(self.joint_head(self.student.forward_outputs(rotate4(x)).embedding))


@register
class SLA(Scheme):
    """Self-supervised label augmentation (Lee, Hwang & Shin, ICML 2020, "Self-supervised Label Augmentation
    via Input Transformations"), the SLA+SD variant.

    A joint classifier (a linear layer on the student's embedding, ``4K`` outputs: class × rotation, the
    scheme's helper module, trained through ``extra_parameters``) sees the four rotations (0°, 90°, 180°, 270°)
    of every training input with the joint label ``4y + k``; the aggregated prediction is, per class, the mean
    over k of the joint logit of (class, k) on the input rotated k times; the student's own classifier (the
    "single" head) learns from CE (the recipe's) and from the aggregated prediction, detached:
    ``T²·KL(softmax(agg/T) ‖ softmax(single/T))`` (batch-mean, official T = 1). Logged: ``sla_joint`` (joint CE
    over the 4N rotated inputs) and ``sla_sd`` (the self-distillation term), both with weight 1 as in the
    official ``create_sla_sd_trainer``; ``aggregated_ce`` adds CE(agg, y) (its ``--with-training-agg``).
    The recipe's terms (e.g. KD from a teacher) act on the single head; no teacher is needed.

    Inference (``inference``): ``single`` (default) exports the student alone, one forward (SLA-SD's point:
    the aggregation distilled into a normal classifier); ``aggregated`` exports
    :class:`RotationAggregated` (student + joint head, four forwards: SLA+AG).

    Differences from the official code: the official network runs once on the 4N batch; here the distiller's
    forward covers the unrotated inputs and one more forward the 3N rotated ones, so BatchNorm statistics are
    taken over the two parts separately. Rotations need square inputs; on 8×8 digits a rotated digit is often
    another plausible digit (6/9), so the rotation task is weaker there than on natural images.
    """

    name = "sla"
    paper = "Lee, Hwang & Shin, ICML 2020, Self-supervised Label Augmentation via Input Transformations"
    hparams = {
        "temperature": HParam(1.0, 1.0, 8.0, doc="temperature of the self-distillation KL"),
        "aggregated_ce": HParam(False, kind="bool", doc="also train the aggregated prediction with CE"),
        "inference": HParam("single", choices=("single", "aggregated"), kind="categorical",
                            doc="exported model: the single head (1 forward) or the rotation aggregate (4)"),
    }
    student_outputs = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.joint_head: nn.Linear | None = None
        self.student: nn.Module | None = None
        self.aggregated: Tensor | None = None  # the last step's aggregated logits (for inspection)

    def setup(self, *, distiller, data, device, **context) -> None:
        check_square(data.input_shape, self.name)
        shapes = probe_shapes(distiller.student, tuple(data.input_shape))
        if shapes.embedding is None:
            raise ConfigError("scheme 'sla' needs a student whose forward_outputs gives an embedding")
        self.student = distiller.student
        self.joint_head = nn.Linear(shapes.embedding, data.num_classes * ROTATIONS).to(device)

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.joint_head.parameters())

    def inference_model(self, model: nn.Module) -> nn.Module:
        if self.params["inference"] == "aggregated":
            if model is not self.student:
                raise ConfigError("scheme 'sla': inference: aggregated cannot wrap a student that a term already "
                                  "wraps at inference (e.g. simkd)")
            return RotationAggregated(self.student, self.joint_head)
        return model

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        joint = self.joint_head(rotated_embeddings(self.student, x, step.student.embedding))
        agg = aggregate_joint(joint)
        self.aggregated = agg.detach()
        out = {"sla_joint": F.cross_entropy(joint.float(), joint_labels(y)),
               "sla_sd": soft_kl(step.student.logits, agg.detach(), self.params["temperature"])}
        if self.params["aggregated_ce"]:
            out["sla_agg"] = F.cross_entropy(agg.float(), y)
        return out
