"""Rocket Launching: a light net and a booster that share their lower layers, trained together."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ..models import shapes as probe_shapes
from ._heads import StageBranch
from .base import Scheme, register

__all__ = ["Rocket", "hint_loss"]


def hint_loss(light_logits: Tensor, booster_logits: Tensor) -> Tensor:
    """``Σ_k (z_light − z_booster)² / N`` with the booster's logits detached (the gradient block): the hint
    only moves the light net and the layers it shares with the booster, never the booster's own layers."""
    diff = light_logits.float() - booster_logits.detach().float()
    return diff.pow(2).sum() / light_logits.shape[0]


@register
class Rocket(Scheme):
    """Rocket Launching (Zhou et al., AAAI 2018, "Rocket Launching: A Universal and Efficient Framework for
    Training Well-performing Light Net").

    The recipe's student is the light net; the booster is built on the student's own stages: it shares the
    student's first ``shared_stages`` stages (0 = all of them) and continues from that stage's feature map with
    its own conv3×3-BN-ReLU blocks — one per later student stage, same strides, ``booster_width`` × the
    channels — plus ``booster_depth`` more blocks at the deepest width, a global average pool and a linear
    classifier (:class:`~autokd.schemes._heads.StageBranch`). This is the official code's "Rocket-Bottom"
    layout (the light net is the booster's lower part with its own head, the booster adds wider/deeper layers
    on top). Loss, as in the official code: the recipe's loss on the light net (its CE is the paper's light
    CE) + CE(booster) (logged ``rocket_booster``; it trains the booster and the shared layers) +
    ``weight`` × Σ_k (z_light − z_booster)² / N (logged ``rocket``), the booster's logits detached in the hint:
    the gradient block. ``weight`` is the paper's λ (official default γ = 0.03). No teacher is needed (a
    recipe without terms works); with terms, KD is added as the official ``rocket_distillation`` does.
    The exported model is the light net.

    Differences from the official code: its light net shares conv weights with the booster but keeps its
    own BatchNorm layers; here the shared stages are the student's modules, BatchNorm included (the booster is
    a head on the zoo model's ``forward_outputs`` features, so the student's forward is not rewritten).
    """

    name = "rocket"
    paper = "Zhou et al., AAAI 2018, Rocket Launching: A Universal and Efficient Framework for Training " \
            "Well-performing Light Net"
    hparams = {
        "weight": HParam(0.03, 0.003, 0.3, log=True, doc="λ of the hint Σ(z_light − z_booster)² / N"),
        "shared_stages": HParam(0, 0, 4, kind="int", doc="student stages shared with the booster; 0 = all"),
        "booster_width": HParam(2.0, 1.0, 4.0, doc="booster channels relative to the student's stages"),
        "booster_depth": HParam(2, 1, 4, kind="int", doc="booster blocks after the student's deepest stage"),
    }
    helper_loss_keys = frozenset({"rocket_booster"})
    student_outputs = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params["booster_width"] <= 0:
            raise ConfigError(f"scheme 'rocket': booster_width must be > 0, got {self.params['booster_width']}")
        self.booster: StageBranch | None = None
        self.branch_stage = -1

    def setup(self, *, distiller, data, device, **context) -> None:
        shapes = probe_shapes(distiller.student, tuple(data.input_shape))
        n = shapes.num_stages
        shared = self.params["shared_stages"] or n
        if not 1 <= shared <= n:
            raise ConfigError(f"scheme 'rocket': shared_stages must be in [0, {n}] for this student "
                              f"({n} stages), got {shared}")
        self.branch_stage = shared - 1
        self.booster = StageBranch(shapes, self.branch_stage, data.num_classes, width=self.params["booster_width"],
                                   extra=self.params["booster_depth"]).to(device).train()

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.booster.parameters())

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        self.booster.train()

    def booster_logits(self, step: Step) -> Tensor:
        return self.booster(step.student.feats[self.branch_stage])

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        z_b = self.booster_logits(step)
        return {"rocket": self.params["weight"] * hint_loss(step.student.logits, z_b),
                "rocket_booster": F.cross_entropy(z_b.float(), y)}
