"""Cross-layer feature distillation (assignment, review, attention reconstruction)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.connectors import match_spatial
from ..outputs import Outputs, Shapes
from .base import DistillLoss, HParam, register
from .factor import pool_to_common

__all__ = ["SemCKD", "ReviewKD", "TaT", "hcl_loss", "tat_reconstruct", "ABF"]


def _stages(shapes: Shapes) -> list[int]:
    """Stage outputs without the stem (RepDistiller's ``feats[1:-1]``), or the only stage."""
    n = shapes.num_stages
    if n == 0:
        raise ConfigError("this loss needs models that expose stage features (Outputs.feats is empty)")
    return list(range(1, n)) if n > 1 else [0]


# ------------------------------------------------------------------------------------------------ SemCKD


class _MLPEmbed(nn.Module):
    """SemCKD's ``MLPEmbed``: linear -> ReLU -> linear -> L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim_in, 2 * dim_out)
        self.linear2 = nn.Linear(2 * dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear2(F.relu(self.linear1(x))), dim=1)


class _Proj(nn.Sequential):
    """SemCKD's ``Proj``: 1×1 conv -> BN -> ReLU -> 3×3 conv -> BN -> ReLU -> 1×1 conv, mid = 2·C_target."""

    def __init__(self, c_in: int, c_out: int) -> None:
        mid = 2 * c_out
        super().__init__(
            nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
        )  # fmt: skip


def _batch_similarity(f: Tensor, dim: int) -> Tensor:
    """Rows of the batch × batch Gram matrix of flattened features, zero-padded (or average-pooled) to ``dim``
    columns so the query/key MLPs see a fixed width whatever the batch size."""
    x = f.flatten(1).float()
    g = x @ x.t()
    n = g.shape[1]
    if n < dim:
        g = F.pad(g, (0, dim - n))
    elif n > dim:
        g = F.adaptive_avg_pool1d(g.unsqueeze(1), dim).squeeze(1)
    return g


@register
class SemCKD(DistillLoss):
    """Cross-Layer Distillation with Semantic Calibration (Chen et al., AAAI 2021).

    Official SemCKD code (github.com/DefangChen/SemCKD, ``SelfA``/``SemCKDLoss``): every student stage i
    attends over all teacher stages j (stem excluded, as ``feat[1:-1]``). Each stage is summarised by its
    batch × batch similarity matrix ``G = F Fᵀ`` (flattened features); the student's rows go through a query
    MLP, the teacher's through a key MLP (linear, ReLU, linear to width/4, L2-normalised), and
    ``α_i = softmax_j(q_i · k_j / temperature)`` per sample. For every (i, j) the larger map is average-pooled
    to the smaller's size, the student's goes through a projector (1×1, 3×3, 1×1 convs with BN/ReLU, mid
    2·C_t) and ``loss = Σ_b Σ_ij α_bij · mean((proj_ij(s_i) - t_j)²)_b / (B · S)``.

    The official MLPs take the Gram rows, whose width is the batch size (it skips incomplete batches). Here
    the width is fixed (``sim_dim``, 64 by default, the ``batch_size`` from :meth:`setup` when given) and rows
    of a smaller batch are zero-padded (a larger batch's rows are average-pooled), so any batch size works.
    Given ``pairs``, the stages used are their teacher and student indices.

    Weight: β = 400 (official, CIFAR-100 resnet32x4 -> resnet8x4). Unlike AT's, this loss does not change with
    the resolution (each pair's term is a per-element mean; measured on digits at 8×8 and upsampled to 32×32
    inputs: the same loss at initialisation, gradients relative to CE within 2×), so no resolution rule applies
    (``weight_scale`` 1). On a tiny training set with a short, high-learning-rate schedule (digits: 224 images,
    15 epochs, lr 0.05) 400 outweighs CE whatever the resolution: at 8×8 it collapses the student and at 32×32
    training diverges; 100 helps at 8×8 but still hurts at 32×32. The search range reaches down to 10.
    """

    name = "semckd"
    paper = "Chen et al., AAAI 2021, Cross-Layer Distillation with Semantic Calibration (arXiv:2012.03236)"
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {"temperature": HParam(1.0, 0.25, 4.0, log=True, doc="softmax temperature of the attention")}
    default_weight = 400.0
    weight_range = (10.0, 1000.0)
    sim_dim = 64
    factor = 4

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.pairs is not None:
            self.t_idx = sorted({int(t) for t, _ in self.pairs})
            self.s_idx = sorted({int(s) for _, s in self.pairs})
        else:
            if self.student_shapes is None or self.teacher_shapes is None:
                raise ConfigError("loss 'semckd' needs the student's and teacher's Shapes to build")
            self.t_idx, self.s_idx = _stages(self.teacher_shapes), _stages(self.student_shapes)
        s_f, t_f = self.student_shapes.feats, self.teacher_shapes.feats
        self.regressors = nn.ModuleList(
            nn.ModuleList(_Proj(s_f[i][0], t_f[j][0]) for j in self.t_idx) for i in self.s_idx
        )
        self._build_attention(self.sim_dim)

    def _build_attention(self, dim: int) -> None:
        self.sim_dim = int(dim)
        out = max(1, self.sim_dim // self.factor)
        self.query = nn.ModuleList(_MLPEmbed(self.sim_dim, out) for _ in self.s_idx)
        self.key = nn.ModuleList(_MLPEmbed(self.sim_dim, out) for _ in self.t_idx)

    def setup(self, **context: Any) -> None:
        bs = context.get("batch_size")
        if bs is not None and int(bs) != self.sim_dim:
            self._build_attention(int(bs))

    def attention(self, fs: list[Tensor], ft: list[Tensor]) -> Tensor:
        """(B, S, T) attention of each student stage over the teacher stages."""
        q = torch.stack(
            [m(_batch_similarity(f, self.sim_dim)) for m, f in zip(self.query, fs, strict=True)], 1
        )
        k = torch.stack([m(_batch_similarity(f, self.sim_dim)) for m, f in zip(self.key, ft, strict=True)], 2)
        return torch.softmax(torch.bmm(q, k) / self.temperature, dim=-1)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        fs = [student.feats[i] for i in self.s_idx]
        ft = [teacher.feats[j].float() for j in self.t_idx]
        att = self.attention(fs, ft)
        rows = []
        for i, regs in enumerate(self.regressors):
            cols = []
            for j, reg in enumerate(regs):
                src, tgt = pool_to_common(fs[i], ft[j])
                cols.append((reg(src).float() - tgt).pow(2).flatten(1).mean(1))
            rows.append(torch.stack(cols, 1))
        per_pair = torch.stack(rows, 1)  # (B, S, T)
        b, s = per_pair.shape[:2]
        return (att * per_pair).sum() / (b * s)


# ---------------------------------------------------------------------------------------------- ReviewKD


class ABF(nn.Module):
    """ReviewKD's attention-based fusion: 1×1 conv + BN to ``mid`` channels, fuse with the (nearest-upsampled)
    residual of the deeper level through a 2-channel sigmoid attention, resize to the teacher's map (nearest),
    3×3 conv + BN to the teacher's channels. Returns (output, residual for the next shallower level)."""

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        x = self.conv1(x)
        if self.att_conv is not None and residual is not None:
            y = F.interpolate(residual, (h, w), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0:1] + y * z[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_hw):
            x = F.interpolate(x, tuple(out_hw), mode="nearest")
        return self.conv2(x), x


def hcl_loss(fs: list[Tensor], ft: list[Tensor], levels: tuple[int, ...] = (4, 2, 1)) -> Tensor:
    """ReviewKD's hierarchical context loss: per level, MSE plus the MSEs of ``l × l`` average-pooled maps for
    ``l`` in ``levels`` with ``l`` < the map size (official: ``if l >= h: continue``), weighted 1/2, 1/4, ...
    and divided by the total weight; summed over levels."""
    total = fs[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(fs, ft, strict=True):
        s, t = s.float(), t.float()
        size = min(s.shape[-2], s.shape[-1])
        loss = F.mse_loss(s, t)
        cnt, tot = 1.0, 1.0
        for lvl in levels:
            if lvl >= size:
                continue
            cnt /= 2.0
            loss = loss + F.mse_loss(F.adaptive_avg_pool2d(s, lvl), F.adaptive_avg_pool2d(t, lvl)) * cnt
            tot += cnt
        total = total + loss / tot
    return total


def _review_levels(student: Shapes, teacher: Shapes, pairs) -> list[tuple[int, int]]:
    """(teacher stage, student stage) for each ReviewKD level, shallow to deep (the embedding level is added
    separately). Default: every teacher stage but the stem, each with the student stage at the closest
    relative depth (ties: the same spatial size)."""
    if pairs is not None:
        return sorted({(int(t), int(s)) for t, s in pairs}, key=lambda p: (p[1], p[0]))
    t_list, s_list = _stages(teacher), _stages(student)
    out = []
    for k, ti in enumerate(t_list):
        rel = k / (len(t_list) - 1) if len(t_list) > 1 else 1.0
        target = rel * (len(s_list) - 1)
        t_hw = teacher.feats[ti][1:]
        best = min(range(len(s_list)), key=lambda p: (abs(p - target), student.feats[s_list[p]][1:] != t_hw))
        out.append((ti, s_list[best]))
    return sorted(set(out), key=lambda p: (p[1], p[0]))


@register
class ReviewKD(DistillLoss):
    """Distilling Knowledge via Knowledge Review (Chen, Liu, Zhao & Jia, CVPR 2021).

    Official ReviewKD / mdistiller conventions: the student's stage features (stem excluded) plus its pooled
    embedding as a 1×1 map are fused from deep to shallow by ABF modules (:class:`ABF`; mid channels
    ``min(512, D_student)``, output channels and sizes those of the teacher's level), and each fused output is
    matched to the teacher's level with the hierarchical context loss (:func:`hcl_loss`, pyramid [4, 2, 1]
    restricted to levels smaller than the map). Teacher targets are the *pre-activation* stage features
    (mdistiller ``preact_feats``; the post-activation ones when a model exposes no preacts) plus the teacher's
    pooled embedding. Student and teacher stages are paired by relative depth (or by ``pairs``).

    The official recipe ramps the weight linearly over the first 20 of 240 epochs; that is a schedule of the
    term's weight (use the ``weight_schedule`` scheme), not part of this loss.

    Weight: 5.0 for resnet32x4 -> resnet8x4 in the official script (``CIFAR-100/script/reviewKD.sh``:
    ``--kd-loss-weight 5.0``, also for the WRN and ShuffleNetV1 pairs; 8.0 for ShuffleNetV2, 0.6 for
    resnet56 -> resnet20, 1.0 for resnet110 -> resnet32) and in mdistiller's ``configs/cifar100/reviewkd.yaml``
    (``REVIEWKD_WEIGHT: 5.0``; its code default 1.0 is overridden there). ``default_weight`` 5.
    """

    name = "review_kd"
    paper = "Chen, Liu, Zhao & Jia, CVPR 2021, Distilling Knowledge via Knowledge Review (arXiv:2104.09044)"
    level = "feature"
    needs = frozenset({"feats", "preacts", "embedding"})
    hparams: dict[str, HParam] = {}
    default_weight = 5.0
    weight_range = (0.3, 20.0)
    max_mid_channels = 512

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        s, t = self.student_shapes, self.teacher_shapes
        if s is None or t is None or s.embedding is None or t.embedding is None:
            raise ConfigError("loss 'review_kd' needs the student's and teacher's Shapes with an embedding")
        self.levels = _review_levels(s, t, self.pairs)
        in_ch = [s.feats[si][0] for _, si in self.levels] + [s.embedding]
        out_ch = [t.feats[ti][0] for ti, _ in self.levels] + [t.embedding]
        self.out_hw = [tuple(t.feats[ti][1:3]) for ti, _ in self.levels] + [(1, 1)]
        mid = min(self.max_mid_channels, s.embedding)
        n = len(in_ch)
        self.abfs = nn.ModuleList(ABF(in_ch[i], mid, out_ch[i], fuse=i < n - 1) for i in range(n))

    def fuse(self, student: Outputs) -> list[Tensor]:
        """The fused student features, shallow to deep, at the teacher's shapes."""
        xs = [student.feats[si] for _, si in self.levels] + [student.embedding[:, :, None, None]]
        results: list[Tensor] = []
        residual = None
        for i in reversed(range(len(xs))):
            out, residual = self.abfs[i](xs[i], residual, self.out_hw[i])
            results.insert(0, out)
        return results

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        t_maps = teacher.preacts if len(teacher.preacts) == len(teacher.feats) else teacher.feats
        targets = [t_maps[ti] for ti, _ in self.levels] + [teacher.embedding[:, :, None, None]]
        return hcl_loss(self.fuse(student), targets)


# --------------------------------------------------------------------------------------------------- TaT


class _TaTEmbed(nn.Sequential):
    """TaT's student-side ``Embed``: 3×3 conv (no bias) + BN to the teacher's channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


def tat_reconstruct(query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """One-to-all reconstruction on (B, L, C) tokens: ``out_i = Σ_j softmax_j(<query_i, key_j>) value_j``
    (unscaled dot products, as TaT's ``MaskedFM``). ``key_mask`` (B, L) marks valid keys."""
    sim = query @ key.transpose(1, 2)
    if key_mask is not None:
        sim = sim.masked_fill(~key_mask[:, None, :], float("-inf"))
    return sim.softmax(dim=-1) @ value


def _tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, HW, C)


def _patches(x: Tensor, p: int) -> Tensor:
    """(N, C, H, W) with H, W multiples of p -> (N·nh·nw, p·p, C) tokens of non-overlapping p×p patches."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n * (h // p) * (w // p), p * p, c)


@register
class TaT(DistillLoss):
    """Knowledge Distillation via the Target-aware Transformer (Lin et al., CVPR 2022).

    The teacher feature at every position is reconstructed from *all* positions of the student feature
    (one-to-all) and matched with MSE. Official code (github.com/sihaoevery/TaT, ``AttnEmbed`` + ``MaskedFM``,
    one head): the student feature (resized to the teacher's map) gives a query and a value through two
    3×3-conv + BN embeddings to the teacher's channels; the key is the raw teacher feature (identity
    embedding); ``out_i = Σ_j softmax_j(<q_i, t_j>) v_j`` (unscaled) and ``loss = MSE(out, t)``. The paper
    writes the similarity as teacher-position i against student positions j (the transpose); we follow the
    code.

    For large maps, ``patch`` > 0 enables the paper's hierarchical variant: patch-group distillation
    (one-to-all inside each non-overlapping ``patch``×``patch`` window; maps are zero-padded to a multiple of
    ``patch`` and padded positions are masked out) plus ``beta`` × anchor-point distillation (one-to-all over
    the maps average-pooled to ``ceil(H/patch)`` × ``ceil(W/patch)`` anchors). Grouping several patches along
    channels (the paper's ``g``) is not implemented (g = 1). The official ImageNet config weighs the term 0.2
    with CE weighted 0.1, i.e. 2× the CE term; hence ``default_weight`` 2.
    """

    name = "tat"
    paper = (
        "Lin et al., CVPR 2022, Knowledge Distillation via the Target-aware Transformer (arXiv:2205.10793)"
    )
    level = "feature"
    needs = frozenset({"feats"})
    hparams = {
        "patch": HParam(0, 0, 8, kind="int", doc="patch size of patch-group/anchor distillation (0: global)"),
        "beta": HParam(1.0, 0.0, 2.0, doc="weight of the anchor-point term (only when patch > 0)"),
    }
    default_weight = 2.0
    weight_range = (0.1, 20.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.stage_pairs = self.resolve_pairs("last")
        s_f, t_f = self.student_shapes.feats, self.teacher_shapes.feats
        self.query = nn.ModuleList(_TaTEmbed(s_f[si][0], t_f[ti][0]) for ti, si in self.stage_pairs)
        self.value = nn.ModuleList(_TaTEmbed(s_f[si][0], t_f[ti][0]) for ti, si in self.stage_pairs)

    @staticmethod
    def _global(q: Tensor, t: Tensor, v: Tensor) -> Tensor:
        out = tat_reconstruct(_tokens(q), _tokens(t), _tokens(v))
        return F.mse_loss(out, _tokens(t))

    @staticmethod
    def _patch_group(q: Tensor, t: Tensor, v: Tensor, p: int) -> Tensor:
        h, w = t.shape[-2:]
        ph, pw = math.ceil(h / p) * p - h, math.ceil(w / p) * p - w
        valid = torch.ones(t.shape[0], 1, h, w, dtype=torch.bool, device=t.device)
        q, t, v = (F.pad(z, (0, pw, 0, ph)) for z in (q, t, v))
        valid = F.pad(valid, (0, pw, 0, ph), value=False)
        mask = _patches(valid, p).squeeze(-1)  # (B', p²)
        tt = _patches(t, p)
        out = tat_reconstruct(_patches(q, p), tt, _patches(v, p), key_mask=mask)
        err = (out - tt).pow(2).sum(-1) * mask
        return err.sum() / (mask.sum() * t.shape[1])

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        total = None
        for k, (ti, si) in enumerate(self.stage_pairs):
            t = teacher.feats[ti].float()
            fs = match_spatial(student.feats[si], t.shape[-2:])
            h, w = t.shape[-2:]
            p = int(self.patch)
            q, v = self.query[k](fs).float(), self.value[k](fs).float()
            if p > 0 and max(h, w) > p:
                loss = self._patch_group(q, t, v, p)
                if self.beta > 0:
                    hw = (math.ceil(h / p), math.ceil(w / p))
                    fa = F.adaptive_avg_pool2d(fs, hw)
                    qa, va = self.query[k](fa).float(), self.value[k](fa).float()
                    loss = loss + self.beta * self._global(qa, F.adaptive_avg_pool2d(t, hw), va)
            else:
                loss = self._global(q, t, v)
            total = loss if total is None else total + loss
        return total
