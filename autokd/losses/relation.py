"""Relation-level distillation terms (sample-to-sample structure within a batch).

Pure loss functions on tensors plus thin registered :class:`DistillLoss` classes. Relations are N × N (or
N × N × N) over the batch, so teacher and student feature sizes need not agree (CC maps the student's
embedding with a linear connector, CC-CRD both embeddings, following CRD). Embedding-based methods (PKT, CC,
CC-CRD, RKD) use ``Outputs.embedding`` and fall back to the flattened last feature map when a model has none. Computed in
float32. ``default_weight`` / ``weight_range`` record the outer weight used by the paper or the reference code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.connectors import LinearConnector, pool_to_smaller
from ..outputs import Outputs
from .base import DistillLoss, HParam, register
from .feature import fp32, resolve_checked_pairs

__all__ = [
    "SP",
    "PKT",
    "CC",
    "CCCRD",
    "RKD",
    "IRG",
    "sp_loss",
    "pkt_loss",
    "cc_kernel",
    "cc_loss",
    "cc_crd_loss",
    "pairwise_distances",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "rkd_loss",
    "irg_edge",
    "irg_transformation",
    "irg_loss",
]


def embedding_of(out: Outputs) -> Tensor:
    """``out.embedding``, or the flattened last feature map when the model gives no embedding."""
    if out.embedding is not None:
        return out.embedding.float()
    if not out.feats:
        raise ConfigError("this loss needs Outputs.embedding (or at least one feature map)")
    return out.feats[-1].float().flatten(1)


# ----------------------------------------------------------------------------------------------- SP
@fp32
def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Similarity-preserving loss: G = F·Fᵀ over the flattened features (N × N), each row L2-normalised;
    ||G_t - G_s||_F^2 / N^2."""
    n = student_feat.shape[0]
    fs, ft = student_feat.float().flatten(1), teacher_feat.float().flatten(1)
    g_s = F.normalize(fs @ fs.t(), dim=1)
    g_t = F.normalize(ft @ ft.t(), dim=1)
    return (g_t - g_s).pow(2).sum() / (n * n)


@register
class SP(DistillLoss):
    """Tung & Mori ICCV 2019, Similarity-Preserving Knowledge Distillation.

    Batch × batch Gram matrix of the flattened stage output, rows L2-normalised; squared Frobenius distance / N²,
    summed over pairs (CRD's ``Similarity``, "verified by the original author"). Default pair: the last stages
    (CRD uses ``feat[-2]``, the last feature map before pooling). Invariant to a common rescaling of the features
    (each row is normalised; a per-sample rescaling still changes the columns).

    Weight: γ = 3000 (paper and CRD).
    """

    name = "sp"
    paper = "Tung & Mori ICCV 2019, Similarity-Preserving Knowledge Distillation (arXiv:1907.09682)"
    level = "relation"
    needs = frozenset({"feats"})
    hparams: dict[str, HParam] = {}
    default_weight = 3000.0
    weight_range = (100.0, 3.0e4)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.layer_pairs = resolve_checked_pairs(self, "last")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(sp_loss(student.feats[si], teacher.feats[ti]) for ti, si in self.layer_pairs)


# ----------------------------------------------------------------------------------------------- PKT
@fp32
def pkt_loss(student_emb: Tensor, teacher_emb: Tensor, eps: float = 1e-7) -> Tensor:
    """PKT (official code): cosine similarities (vectors divided by norm + eps, NaNs zeroed) mapped to [0, 1] by
    (cos + 1)/2, each row normalised into conditional probabilities; mean over the N × N entries of
    p_t · log((p_t + eps) / (p_s + eps))."""

    def cond_prob(x: Tensor) -> Tensor:
        x = x.float().flatten(1)
        x = x / (x.norm(dim=1, keepdim=True) + eps)
        x = torch.nan_to_num(x, nan=0.0)
        sim = (x @ x.t() + 1.0) / 2.0
        return sim / sim.sum(dim=1, keepdim=True)

    p_s, p_t = cond_prob(student_emb), cond_prob(teacher_emb)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@register
class PKT(DistillLoss):
    """Passalis & Tefas ECCV 2018, Learning Deep Representations with Probabilistic Knowledge Transfer
    (official code: passalis/probabilistic_kt, copied into CRD).

    Cosine-similarity kernel over the batch turned into conditional probabilities; KL(teacher ‖ student) as the
    official code computes it (mean over all N² entries, eps = 1e-7 inside the log). On the embeddings (CRD:
    ``feat[-1]``, the pooled penultimate vector). Invariant to rescaling either embedding.

    Weight: 30000 (CRD; KD-Zoo uses 10000).
    """

    name = "pkt"
    paper = "Passalis & Tefas ECCV 2018, Learning Deep Representations with Probabilistic Knowledge Transfer"
    level = "relation"
    needs = frozenset({"embedding"})
    hparams: dict[str, HParam] = {}
    default_weight = 3.0e4
    weight_range = (1.0e3, 1.0e5)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return pkt_loss(embedding_of(student), embedding_of(teacher))


# ----------------------------------------------------------------------------------------------- CC
@fp32
def cc_kernel(emb: Tensor, gamma: float = 0.4, p_order: int = 2) -> Tensor:
    """Correlation matrix of L2-normalised embeddings under the Gaussian RBF exp(-γ||a-b||²) = e^{-2γ}·e^{2γ a·b},
    the second factor replaced by its Taylor series of order ``p_order``: Σ_p e^{-2γ}(2γ)^p / p! · (a·b)^p."""
    e = F.normalize(emb.float().flatten(1), dim=1)
    sim = e @ e.t()
    out = torch.zeros_like(sim)
    for p in range(int(p_order) + 1):
        out = out + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return out


@fp32
def cc_loss(student_emb: Tensor, teacher_emb: Tensor, gamma: float = 0.4, p_order: int = 2) -> Tensor:
    """Correlation congruence: MSE (mean over N × N) between the two Taylor-RBF correlation matrices."""
    return F.mse_loss(cc_kernel(student_emb, gamma, p_order), cc_kernel(teacher_emb, gamma, p_order))


@register
class CC(DistillLoss):
    """Peng et al. ICCV 2019, Correlation Congruence for Knowledge Distillation.

    Batch correlation with the Gaussian RBF kernel approximated by its Taylor expansion of order ``p_order`` (2)
    with ``gamma`` (0.4) on L2-normalised embeddings; MSE between the teacher's and student's matrices. The
    kernel follows the paper (and the widely used KD-Zoo port; the authors released no code). CRD's
    ``Correlation`` ("code emailed by the author", the CC of CRD's tables) computes something else — the mean of
    |Δ_i|·|Δ_i+1| over consecutive samples after trainable 128-d linear embeddings on *both* sides — and is
    registered separately as ``cc_crd``. Here we keep CRD's idea of a linear embedding but only on the student (a
    linear connector to the teacher's embedding size, always present), leaving the teacher's relations a fixed
    target. Only the CC term is implemented (the paper adds KD and instance congruence: add a ``kd`` term).

    Weight: 100 with this kernel (KD-Zoo); CRD's different formula (``cc_crd``) uses 0.02.
    """

    name = "cc"
    paper = "Peng et al. ICCV 2019, Correlation Congruence for Knowledge Distillation (arXiv:1904.01802)"
    level = "relation"
    needs = frozenset({"embedding"})
    hparams = {
        "gamma": HParam(0.4, 0.05, 2.0, log=True, doc="RBF kernel width γ"),
        "p_order": HParam(2, 1, 5, kind="int", doc="order of the Taylor expansion"),
    }
    default_weight = 100.0
    weight_range = (1.0, 1.0e4)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.student_shapes is None or self.teacher_shapes is None:
            raise ConfigError("loss 'cc' builds a connector: it needs the student's and teacher's Shapes")
        d_s = self.student_shapes.embedding or int(math.prod(self.student_shapes.feats[-1]))
        d_t = self.teacher_shapes.embedding or int(math.prod(self.teacher_shapes.feats[-1]))
        self.connector = LinearConnector(d_s, d_t, always=True)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return cc_loss(self.connector(embedding_of(student)), embedding_of(teacher), self.gamma, self.p_order)


# ----------------------------------------------------------------------------------------------- CC (CRD)
@fp32
def cc_crd_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """CRD's ``Correlation``: Δ = |e_s − e_t| (N, D); mean over i = 0..N−2 of Σ_d Δ[i, d] · Δ[i+1, d]."""
    delta = (student_emb.float() - teacher_emb.float()).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


@register
class CCCRD(DistillLoss):
    """Correlation Congruence as RepDistiller (CRD, Tian et al. ICLR 2020) runs it for its tables
    (``distiller_zoo/CC.py``: "the authors nicely shared the code with me"); the paper's method is ``cc``.

    Both pooled embeddings go through trainable linear layers to ``feat_dim`` = 128 (CRD's ``LinearEmbed`` on
    ``feat_s[-1]`` and ``feat_t[-1]``; both are in CRD's trainable list, so the teacher-side embedding trains too
    and the teacher's frozen features only feed it); Δ_i = |e_s,i − e_t,i| per sample, and the loss is the mean
    over consecutive samples of Σ_d Δ_i,d · Δ_i+1,d, exactly as CRD computes it (the batch order defines the
    pairs; a batch of one gives no pair and a zero loss). Both embeddings shrinking to zero also lowers this
    loss: that is CRD's formula, kept as is (weight decay and the small weight keep it in check).

    Weight: 0.02 (CRD's ``run_cifar_distill.sh``: ``--distill correlation -b 0.02``).
    """

    name = "cc_crd"
    paper = ("Peng et al. ICCV 2019, Correlation Congruence for Knowledge Distillation, as implemented in "
             "Tian et al. ICLR 2020 (RepDistiller)")
    level = "relation"
    needs = frozenset({"embedding"})
    hparams = {"feat_dim": HParam(128, 16, 512, kind="int", log=True, doc="width of the two linear embeddings")}
    default_weight = 0.02
    weight_range = (0.002, 0.2)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.student_shapes is None or self.teacher_shapes is None:
            raise ConfigError("loss 'cc_crd' builds embeddings: it needs the student's and teacher's Shapes")
        d_s = self.student_shapes.embedding or int(math.prod(self.student_shapes.feats[-1]))
        d_t = self.teacher_shapes.embedding or int(math.prod(self.teacher_shapes.feats[-1]))
        self.embed_s = nn.Linear(d_s, self.feat_dim)
        self.embed_t = nn.Linear(d_t, self.feat_dim)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return cc_crd_loss(self.embed_s(embedding_of(student)), self.embed_t(embedding_of(teacher)))


# ----------------------------------------------------------------------------------------------- RKD
@fp32
def pairwise_distances(e: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """Euclidean distance matrix of the rows of (N, D) ``e``, clamped at ``eps`` before the square root, with a
    zero diagonal (CRD's / the official ``pdist``)."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def _mean_normalised(d: Tensor) -> Tensor:
    positive = d > 0
    return d / (d.sum() / positive.sum().clamp_min(1)).clamp_min(1e-12)


@fp32
def rkd_distance_loss(student_emb: Tensor, teacher_emb: Tensor, eps: float = 1e-12) -> Tensor:
    """Distance-wise RKD: pairwise distances divided by their mean over the positive entries; smooth L1
    (Huber, δ = 1, mean over N²)."""
    d_s = _mean_normalised(pairwise_distances(student_emb.float().flatten(1), eps=eps))
    d_t = _mean_normalised(pairwise_distances(teacher_emb.float().flatten(1), eps=eps))
    return F.smooth_l1_loss(d_s, d_t)


def _angles(e: Tensor) -> Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # diff[i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # cos of the angle at vertex i between j and k


@fp32
def rkd_angle_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """Angle-wise RKD: cosines of all triplet angles ∠(e_j - e_i, e_k - e_i); smooth L1 (mean over N³)."""
    return F.smooth_l1_loss(_angles(student_emb.float().flatten(1)), _angles(teacher_emb.float().flatten(1)))


@fp32
def rkd_loss(student_emb: Tensor, teacher_emb: Tensor, alpha: float = 25.0, beta: float = 50.0) -> Tensor:
    """alpha · distance loss + beta · angle loss."""
    return alpha * rkd_distance_loss(student_emb, teacher_emb) + beta * rkd_angle_loss(student_emb, teacher_emb)


@register
class RKD(DistillLoss):
    """Park, Kim, Lu & Cho CVPR 2019, Relational Knowledge Distillation (official code: lenscloth/RKD; CRD).

    ``alpha`` · distance-wise loss (pairwise Euclidean distances, squared=False, clamped at eps = 1e-12, each
    matrix divided by its mean positive distance, smooth L1) + ``beta`` · angle-wise loss (cosines of all triplet
    angles, smooth L1), on the embeddings (CRD: the pooled ``feat[-1]``). Both terms are invariant to rescaling
    either embedding. alpha = 25 and beta = 50 as CRD's ``RKDLoss(w_d=25, w_a=50)`` (the paper's classification
    setting; its metric-learning runs use 1 and 2).

    Weight: 1 (CRD, KD-Zoo), with alpha/beta inside.
    """

    name = "rkd"
    paper = "Park, Kim, Lu & Cho CVPR 2019, Relational Knowledge Distillation (arXiv:1904.05068)"
    level = "relation"
    needs = frozenset({"embedding"})
    hparams = {
        "alpha": HParam(25.0, 1.0, 100.0, log=True, doc="weight of the distance-wise term"),
        "beta": HParam(50.0, 1.0, 200.0, log=True, doc="weight of the angle-wise term"),
    }
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return rkd_loss(embedding_of(student), embedding_of(teacher), self.alpha, self.beta)


# ----------------------------------------------------------------------------------------------- IRG
@fp32
def irg_edge(x: Tensor, eps: float = 1e-12) -> Tensor:
    """IRG edges of one layer: squared Euclidean distances between the flattened instances (clamped at eps,
    zero diagonal) divided by their maximum -> (N, N)."""
    d = pairwise_distances(x.float().flatten(1), squared=True, eps=eps)
    return d / d.max().clamp_min(eps)


def _channel_pool(x: Tensor, channels: int) -> Tensor:
    if x.shape[1] == channels:
        return x
    n, c, h, w = x.shape
    pooled = F.adaptive_avg_pool1d(x.flatten(2).transpose(1, 2).reshape(n * h * w, 1, c), channels)
    return pooled.reshape(n, h * w, channels).transpose(1, 2).reshape(n, channels, h, w)


@fp32
def irg_transformation(shallow: Tensor, deep: Tensor, eps: float = 1e-12) -> Tensor:
    """IRG transformation between two layers of one network: per-instance squared distance between the two maps
    (larger spatial size pooled to the smaller; channels averaged in consecutive groups down to the smaller
    count, generalising KD-Zoo's pairwise channel averaging), divided by its maximum -> (N,)."""
    a, b = pool_to_smaller(shallow.float(), deep.float())
    c = min(a.shape[1], b.shape[1])
    a, b = _channel_pool(a, c), _channel_pool(b, c)
    d = (a - b).flatten(1).pow(2).sum(1).clamp(min=eps)
    return d / d.max().clamp_min(eps)


@fp32
def irg_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_layers: list[Tensor],
    teacher_layers: list[Tensor],
    student_maps: list[Tensor],
    teacher_maps: list[Tensor],
    alpha: float = 0.1,
    beta: float = 5.0,
    gamma: float = 5.0,
) -> Tensor:
    """alpha · vertex (MSE of the logits) + beta · edge (mean over ``*_layers`` of the MSE between max-normalised
    distance matrices) + gamma · transformation (mean over consecutive ``*_maps`` of the MSE between the
    max-normalised per-instance transformation distances; 0 with fewer than two maps)."""
    vertex = F.mse_loss(student_logits.float(), teacher_logits.float())
    edge = torch.stack([F.mse_loss(irg_edge(s), irg_edge(t)) for s, t in zip(student_layers, teacher_layers,
                                                                               strict=True)]).mean()
    trans = [
        F.mse_loss(irg_transformation(student_maps[i], student_maps[i + 1]),
                   irg_transformation(teacher_maps[i], teacher_maps[i + 1]))
        for i in range(len(student_maps) - 1)
    ]
    transformation = torch.stack(trans).mean() if trans else vertex.new_zeros(())
    return alpha * vertex + beta * edge + gamma * transformation


@register
class IRG(DistillLoss):
    """Liu et al. CVPR 2019, Knowledge Distillation via Instance Relationship Graph (official code in Caffe:
    yufanLIU/IRG; terms and weights as the KD-Zoo PyTorch port).

    Terms used: vertex = MSE between the logits (the instance features of the last layer); edge = for the
    embedding and each paired stage map, the squared-Euclidean distance matrix over the batch normalised by its
    maximum, MSE, averaged over those layers; transformation = between consecutive paired stages, each instance's
    squared distance from its shallower to its deeper map (pooled to a common size and channel count), normalised
    by the maximum, MSE, averaged. Loss = alpha · vertex + beta · edge + gamma · transformation with
    alpha = 0.1, beta = 5, gamma = 5 (KD-Zoo). Default pairs: the last two ``auto`` pairs (KD-Zoo: the outputs of
    the last two ResNet stages).

    Weight: 1 (KD-Zoo), with alpha/beta/gamma inside.
    """

    name = "irg"
    paper = "Liu et al. CVPR 2019, Knowledge Distillation via Instance Relationship Graph"
    level = "relation"
    needs = frozenset({"logits", "feats", "embedding"})
    hparams = {
        "alpha": HParam(0.1, 0.01, 1.0, log=True, doc="weight of the vertex term (logits)"),
        "beta": HParam(5.0, 0.5, 50.0, log=True, doc="weight of the edge term (distance matrices)"),
        "gamma": HParam(5.0, 0.5, 50.0, log=True, doc="weight of the transformation term (between layers)"),
    }
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        pairs = resolve_checked_pairs(self, "auto")
        self.layer_pairs = pairs if self.pairs is not None else pairs[-2:]

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        s_maps = [student.feats[si] for _, si in self.layer_pairs]
        t_maps = [teacher.feats[ti] for ti, _ in self.layer_pairs]
        s_layers, t_layers = list(s_maps), list(t_maps)
        if student.embedding is not None and teacher.embedding is not None:
            s_layers.append(student.embedding)
            t_layers.append(teacher.embedding)
        return irg_loss(student.logits, teacher.logits, s_layers, t_layers, s_maps, t_maps,
                        self.alpha, self.beta, self.gamma)

