"""Frequency-domain feature distillation (FreeKD)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.connectors import FeatureConnector
from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = ["HaarDWT", "FreeKD", "dice_overlap"]


class HaarDWT(nn.Module):
    """Orthonormal 2-D Haar wavelet transform with fixed 2×2 filters (a stride-2 depthwise convolution).

    For each 2×2 block ``[[a, b], [c, d]]``: ``LL = (a+b+c+d)/2``, ``LH = (a+b-c-d)/2`` (top minus bottom),
    ``HL = (a-b+c-d)/2`` (left minus right), ``HH = (a-b-c+d)/2``. Odd sizes are zero-padded at the
    bottom/right (pytorch_wavelets' ``mode='zero'`` for Haar). :meth:`inverse` is the transposed convolution
    (exact inverse, the basis being orthonormal); :meth:`decompose` applies ``levels`` levels to the LL band.
    """

    def __init__(self) -> None:
        super().__init__()
        f = (
            torch.tensor(
                [
                    [[1.0, 1.0], [1.0, 1.0]],
                    [[1.0, 1.0], [-1.0, -1.0]],
                    [[1.0, -1.0], [1.0, -1.0]],
                    [[1.0, -1.0], [-1.0, 1.0]],
                ]
            )
            / 2.0
        )
        self.register_buffer("filters", f.unsqueeze(1), persistent=False)  # (4, 1, 2, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One level: (N, C, H, W) -> LL (N, C, H', W'), highs (N, C, 3, H', W') with H' = ceil(H/2)."""
        n, c, h, w = x.shape
        x = F.pad(x, (0, w % 2, 0, h % 2))
        y = F.conv2d(x.reshape(n * c, 1, *x.shape[-2:]), self.filters.to(x.dtype), stride=2)
        y = y.view(n, c, 4, *y.shape[-2:])
        return y[:, :, 0], y[:, :, 1:]

    def inverse(self, ll: Tensor, highs: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        n, c, h, w = ll.shape
        y = torch.cat([ll.unsqueeze(2), highs], dim=2).reshape(n * c, 4, h, w)
        x = F.conv_transpose2d(y, self.filters.to(y.dtype), stride=2).view(n, c, 2 * h, 2 * w)
        if size is not None:
            x = x[..., : size[0], : size[1]]
        return x

    def decompose(self, x: Tensor, levels: int) -> tuple[Tensor, list[Tensor]]:
        """``levels`` levels: the coarsest LL and the high bands, finest first."""
        highs = []
        for _ in range(levels):
            x, hb = self(x)
            highs.append(hb)
        return x, highs

    def reconstruct(self, ll: Tensor, highs: list[Tensor], size: tuple[int, int]) -> Tensor:
        sizes = [tuple(size)]
        for _ in range(len(highs) - 1):
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        for hb, sz in zip(reversed(highs), reversed(sizes), strict=True):
            ll = self.inverse(ll, hb, sz)
        return ll


def dice_overlap(masks: Tensor) -> Tensor:
    """Mean pairwise Dice coefficient between the T masks of each sample (masks (B, T, L)), over the pairs of
    different prompts (FreeKD's ``dice_coeff``, a diversity penalty); 0 for a single prompt."""
    t = masks.shape[1]
    if t < 2:
        return masks.new_zeros(())
    inter = masks @ masks.transpose(1, 2)  # (B, T, T)
    sq = masks.pow(2).sum(-1) + 1e-12
    d = 2 * inter / (sq[:, :, None] + sq[:, None, :])
    off = ~torch.eye(t, dtype=torch.bool, device=masks.device)
    return d[:, off].mean()


def _prompt_mask(prompts: Tensor, band: Tensor) -> Tensor:
    """Pixel masks (N, T, H, W) = sigmoid(<prompt_t, band(·, h, w)>) for prompts (T, C) and a band (N, C, H,
    W)."""
    return torch.sigmoid(torch.einsum("tc,nchw->nthw", prompts, band))


@register
class FreeKD(DistillLoss):
    """FreeKD: Knowledge Distillation via Semantic Frequency Prompt (Zhang et al., CVPR 2024).

    The teacher's and the (connected) student's feature maps are decomposed with a ``levels``-level Haar DWT
    (:class:`HaarDWT`, implemented here with fixed filters). Learnable frequency prompts (``num_prompts``
    vectors of the teacher's channels per band: the LL band and each level's high band) turn the teacher's
    bands into pixel masks ``M_t = sigmoid(<P_t, band_teacher>)`` (for high bands, the teacher's three
    orientations summed, as the official ``MaskModule``); the distances are masked L1 (official ``l1_loss`` of
    the masked bands)::

        loss = alpha · mean_t(M_t · |LL_s − LL_t|) + beta · Σ_levels mean_t(M_t · |H_s − H_t|)

    Simplifications relative to the detection-oriented official code (github.com/Gumpest/FreeKD, mmrazor):

    - one feature pair (default: the last stages; ``pairs`` may list several) instead of the FPN levels; the
      student is aligned by a 1×1 conv + BN connector (official: a ReviewKD-style ABF align module);
    - the number of levels is clipped to the map size (official: 3 levels on large FPN maps);
    - the low-frequency band is distilled too (weight ``alpha``; the released loss comments it out);
    - prompt "fine-tuning with the teacher": :meth:`pretrain` trains the prompts (only) for
      ``pretrain_epochs`` epochs on the frozen teacher: the prompt-masked bands are inverse-transformed and,
      when the pair is the teacher's last stage, classified by the teacher's own classifier (cross-entropy) —
      otherwise reconstructed (MSE) — plus the official Dice diversity penalty between prompts. During
      distillation the prompts are frozen (the official optimiser config gives the loss modules
      ``lr_mult=0``);
    - the paper's position-aware relational loss for dense prediction is not implemented; channels are
      weighted only through the prompts' channel vectors that produce the masks.

    Official loss weight 1.
    """

    name = "freekd"
    paper = (
        "Zhang et al., CVPR 2024, FreeKD: Knowledge Distillation via Semantic Frequency Prompt "
        "(arXiv:2311.12079)"
    )
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {
        "num_prompts": HParam(2, 1, 8, kind="int", doc="frequency prompts per band"),
        "levels": HParam(2, 1, 3, kind="int", doc="Haar DWT levels (clipped to the map size)"),
        "alpha": HParam(1.0, 0.0, 4.0, doc="weight of the low-frequency (LL) term"),
        "beta": HParam(1.0, 0.0, 4.0, doc="weight of the high-frequency terms"),
        "pretrain_epochs": HParam(1, 0, 5, kind="int", doc="prompt pre-training epochs on the teacher"),
    }
    default_weight = 1.0
    weight_range = (0.1, 20.0)
    pretrain_lr = 1e-2

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.stage_pairs = self.resolve_pairs("last")
        s_f, t_f = self.student_shapes.feats, self.teacher_shapes.feats
        self.dwt = HaarDWT()
        self.connectors = nn.ModuleList(
            FeatureConnector(s_f[si], t_f[ti], always_conv=True) for ti, si in self.stage_pairs
        )
        self.num_levels = [self.levels_for(t_f[ti][1:3]) for ti, _ in self.stage_pairs]
        self.prompts = nn.ParameterList(
            nn.Parameter(torch.randn(j + 1, self.num_prompts, t_f[ti][0]) * 0.01, requires_grad=False)
            for (ti, _), j in zip(self.stage_pairs, self.num_levels, strict=True)
        )
        self.pretrain_history: list[float] = []

    def levels_for(self, hw) -> int:
        h, w = int(hw[0]), int(hw[1])
        return max(0, min(int(self.levels), int(math.floor(math.log2(max(1, min(h, w)))))))

    def band_masks(
        self, k: int, t: Tensor, prompts: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """Masks per band (LL first, then each level's high band) of the teacher map ``t`` for pair ``k``."""
        p = self.prompts[k] if prompts is None else prompts
        ll, highs = self.dwt.decompose(t, self.num_levels[k])
        masks = [_prompt_mask(p[0].to(t.dtype), ll)]
        masks += [_prompt_mask(p[j + 1].to(t.dtype), hb.sum(2)) for j, hb in enumerate(highs)]
        return masks, ll, highs

    def pair_loss(self, k: int, s: Tensor, t: Tensor) -> Tensor:
        masks, ll_t, highs_t = self.band_masks(k, t, self.prompts[k].detach())
        ll_s, highs_s = self.dwt.decompose(s, self.num_levels[k])
        low = (masks[0].unsqueeze(2) * (ll_s - ll_t).abs().unsqueeze(1)).mean()
        high = s.new_zeros(())
        for m, hs, ht in zip(masks[1:], highs_s, highs_t, strict=True):
            high = high + (m[:, :, None, None] * (hs - ht).abs().unsqueeze(1)).mean()
        return self.alpha * low + self.beta * high

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        total = None
        for k, (ti, si) in enumerate(self.stage_pairs):
            t = teacher.feats[ti].float()
            s = self.connectors[k](student.feats[si]).float()
            loss = self.pair_loss(k, s, t)
            total = loss if total is None else total + loss
        return total

    # -- prompt pre-training on the frozen teacher -----------------------------------------------------
    def prompt_loss(self, k: int, t: Tensor, y: Tensor, classifier: nn.Linear | None) -> Tensor:
        masks, ll, highs = self.band_masks(k, t)
        ll_m = ll * masks[0].sum(1, keepdim=True)
        highs_m = [hb * m.sum(1)[:, None, None] for hb, m in zip(highs, masks[1:], strict=True)]
        rec = self.dwt.reconstruct(ll_m, highs_m, tuple(t.shape[-2:])) if highs else ll_m
        dice = sum(dice_overlap(m.flatten(2)) for m in masks)
        if classifier is not None:
            emb = F.adaptive_avg_pool2d(rec, 1).flatten(1)
            task = F.cross_entropy(
                F.linear(
                    emb,
                    classifier.weight.detach(),
                    classifier.bias.detach() if classifier.bias is not None else None,
                ),
                y,
            )
        else:
            task = F.mse_loss(rec, t)
        return task + dice

    def pretrain(self, *, teacher_model: nn.Module, loader, device, epochs: int) -> None:
        if teacher_model is None or self.pretrain_epochs < 1:
            return
        nt = self.teacher_shapes.num_stages
        heads: list[nn.Linear | None] = []
        for ti, _ in self.stage_pairs:
            cls = getattr(teacher_model, "classifier", None)
            ok = (
                ti == nt - 1
                and isinstance(cls, nn.Linear)
                and cls.in_features == self.teacher_shapes.feats[ti][0]
            )
            heads.append(cls if ok else None)
        params = list(self.prompts)
        for p in params:
            p.requires_grad_(True)
        teacher_model.eval()
        opt = torch.optim.Adam(params, lr=self.pretrain_lr)
        try:
            for _ in range(self.pretrain_epochs):
                total, n = 0.0, 0
                for x, y, *_ in loader:
                    with torch.no_grad():
                        feats = teacher_model.forward_outputs(x.to(device)).feats
                    y = y.to(device)
                    loss = sum(
                        self.prompt_loss(k, feats[ti].float(), y, heads[k])
                        for k, (ti, _) in enumerate(self.stage_pairs)
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total, n = total + float(loss.detach()), n + 1
                self.pretrain_history.append(total / max(1, n))
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None
        if not self.pretrain_history:
            raise ConfigError("loss 'freekd': the pre-training loader yielded no batches")
