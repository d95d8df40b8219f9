"""Factor Transfer (paraphraser / translator)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = ["FactorTransfer", "Paraphraser", "Translator", "factor_distance", "pool_to_common"]


def pool_to_common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the larger of two (N, C, H, W) maps to the smaller's (H, W), per dimension
    (RepDistiller / SemCKD / SimKD convention: never upsample)."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    if tuple(a.shape[-2:]) != (h, w):
        a = F.adaptive_avg_pool2d(a, (h, w))
    if tuple(b.shape[-2:]) != (h, w):
        b = F.adaptive_avg_pool2d(b, (h, w))
    return a, b


def _conv_block(cin: int, cout: int, transpose: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return [conv(cin, cout, kernel_size=3, stride=1, padding=1, bias=True), nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    """Kim et al.'s paraphraser: 3×(conv3×3 + LeakyReLU 0.1) encoder C -> k = round(rate·C) channels and
    a mirrored 3×(transposed conv3×3 + LeakyReLU) decoder back to C. No BN, as the authors' code."""

    def __init__(self, channels: int, rate: float) -> None:
        super().__init__()
        k = max(1, int(round(channels * rate)))
        self.factor_channels = k
        self.encoder = nn.Sequential(
            *_conv_block(channels, channels), *_conv_block(channels, k), *_conv_block(k, k)
        )
        self.decoder = nn.Sequential(
            *_conv_block(k, k, True), *_conv_block(k, channels, True), *_conv_block(channels, channels, True)
        )

    def forward(self, x: Tensor) -> Tensor:
        """The teacher factor."""
        return self.encoder(x)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class Translator(nn.Sequential):
    """Kim et al.'s translator: the paraphraser's encoder layout on the student's feature, C_s -> k
    channels."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__(
            *_conv_block(channels, channels),
            *_conv_block(channels, factor_channels),
            *_conv_block(factor_channels, factor_channels),
        )


def factor_distance(factor_s: Tensor, factor_t: Tensor) -> Tensor:
    """FT loss with p = 1: mean |F_s/‖F_s‖₂ − F_t/‖F_t‖₂| over the flattened, per-sample L2-normalised
    factors (``nn.L1Loss`` of the authors' code, i.e. averaged over batch and elements)."""
    factor_s, factor_t = pool_to_common(factor_s, factor_t)
    s = F.normalize(factor_s.flatten(1).float(), dim=1)
    t = F.normalize(factor_t.flatten(1).float(), dim=1)
    return (s - t).abs().mean()


@register
class FactorTransfer(DistillLoss):
    """Factor Transfer (Kim, Park & Kwak, NeurIPS 2018, "Paraphrasing Complex Network").

    Follows the official code of the authors (github.com/Jangho-Kim/Factor-Transfer-pytorch):

    - a paraphraser (conv auto-encoder, factor channels ``rate``·C_t, ``rate`` 0.5) on the teacher's feature
      of the pair (default: the last stage), pre-trained in :meth:`pretrain` to reconstruct it with an **L1**
      loss (``nn.L1Loss``; RepDistiller uses MSE), then frozen: its parameters never reach the optimiser;
    - a translator (the encoder layout, no decoder) on the student's feature, trained with the student;
    - loss: ``mean |F_s/‖F_s‖₂ − F_t/‖F_t‖₂|`` with per-sample L2 normalisation of the flattened factors
      (p = 1). (RepDistiller's ``FactorTransfer`` instead normalises the channel-mean of squared factors.)
      When the maps' sizes differ, the larger factor is average-pooled to the smaller (RepDistiller).

    Pre-training: the authors train the paraphraser for 5 epochs with SGD (lr 0.1), RepDistiller for 30; here
    ``pretrain_epochs`` (default 2) epochs of Adam (lr 1e-3), which converges faster on short budgets. Without
    a pre-training stage (e.g. in a user's own loop that does not call :meth:`pretrain`) the paraphraser stays
    at its random initialisation. The paper's weight is β = 500 (CIFAR-10; RepDistiller uses 200).
    """

    name = "ft"
    paper = (
        "Kim, Park & Kwak, NeurIPS 2018, Paraphrasing Complex Network: "
        "Network Compression via Factor Transfer"
    )
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {
        "rate": HParam(0.5, 0.25, 1.0, doc="paraphrase rate k: factor channels = k · teacher channels"),
        "pretrain_epochs": HParam(2, 1, 10, kind="int", doc="paraphraser pre-training epochs"),
    }
    default_weight = 500.0
    weight_range = (50.0, 2000.0)
    pretrain_lr = 1e-3

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        pairs = self.resolve_pairs("last")
        if len(pairs) != 1:
            raise ConfigError(f"loss 'ft' distils one (teacher, student) stage pair, got pairs={pairs}")
        self.t_stage, self.s_stage = pairs[0]
        t_shape = self.teacher_shapes.feats[self.t_stage]
        s_shape = self.student_shapes.feats[self.s_stage]
        self.paraphraser = Paraphraser(t_shape[0], self.rate)
        self.paraphraser.requires_grad_(False)
        self.translator = Translator(s_shape[0], self.paraphraser.factor_channels)
        self.pretrain_history: list[float] = []

    def reconstruction_loss(self, teacher_feat: Tensor) -> Tensor:
        """L1 reconstruction error of the paraphraser on a teacher feature map."""
        return F.l1_loss(self.paraphraser.reconstruct(teacher_feat), teacher_feat)

    def pretrain(self, *, teacher_model: nn.Module, loader, device, epochs: int) -> None:
        if teacher_model is None or self.pretrain_epochs < 1:
            return
        para = self.paraphraser
        para.requires_grad_(True)
        para.train()
        teacher_model.eval()
        opt = torch.optim.Adam(para.parameters(), lr=self.pretrain_lr)
        try:
            for _ in range(self.pretrain_epochs):
                total, n = 0.0, 0
                for x, *_ in loader:
                    with torch.no_grad():
                        f = teacher_model.forward_outputs(x.to(device)).feats[self.t_stage].float()
                    loss = self.reconstruction_loss(f)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, n = total + float(loss.detach()), n + 1
                self.pretrain_history.append(total / max(1, n))
        finally:
            para.requires_grad_(False)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        with torch.no_grad():
            factor_t = self.paraphraser(teacher.feats[self.t_stage].float())
        factor_s = self.translator(student.feats[self.s_stage])
        return factor_distance(factor_s, factor_t)
