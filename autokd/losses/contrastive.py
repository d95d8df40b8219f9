"""Contrastive distillation: CRD (memory banks of both models) and BINGO (bags of teacher neighbours)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = ["CRD", "nce_loss", "EmbedHead", "BINGO", "teacher_bags", "bingo_loss"]

_EPS = 1e-7


class EmbedHead(nn.Module):
    """CRD's ``Embed``: a linear projection followed by L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """NCE loss of CRD (Eq. 18 of the paper, RepDistiller's ``ContrastLoss``).

    ``scores`` (B, K+1) are the normalised exponentiated similarities, positive in column 0. With
    ``m = K`` negatives and the uniform noise ``Pn = 1 / num_data``::

        loss = -(1/B) Σ_b [ log(P⁺/(P⁺ + m·Pn + eps)) + Σ_k log(m·Pn/(P⁻_k + m·Pn + eps)) ]
    """
    b, k1 = scores.shape
    m = k1 - 1
    mpn = m / float(num_data)
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_d1 = torch.log(pos / (pos + mpn + _EPS))
    log_d0 = torch.log(mpn / (neg + mpn + _EPS))
    return -(log_d1.sum() + log_d0.sum()) / b


@register
class CRD(DistillLoss):
    """Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020).

    Conventions of the official RepDistiller code (``crd/criterion.py``, ``crd/memory.py``):

    - student and teacher embeddings (``Outputs.embedding``, the pooled penultimate vector) each go through
      a linear layer to ``feat_dim`` (128) and are L2-normalised;
    - two memory banks of size ``num_samples × feat_dim`` (one of student, one of teacher embeddings),
      initialised uniformly in ±1/sqrt(feat_dim/3). They are registered buffers, so they travel with
      ``state_dict`` and ``.to(device)``;
    - for every sample, ``nce_k`` negatives (clipped to ``num_samples - 1``) plus the positive (its own index)
      are read from the *other* model's bank: ``exp(<bank_t[j], e_s> / T)`` and ``exp(<bank_s[j], e_t> / T)``;
    - each side is divided by a normalisation constant ``Z = mean(exp(...)) · num_samples`` fixed on the first
      batch (then kept, also in ``state_dict``), and scored with the NCE loss (:func:`nce_loss`); the term is
      the sum of the student-anchored and teacher-anchored parts;
    - after the scores are computed the banks are updated at the batch's indices only:
      ``bank[i] <- normalize(momentum · bank[i] + (1 - momentum) · e_i)`` (``momentum`` 0.5), in training
      mode.

    Negatives are drawn uniformly with replacement (``torch.randint``): the official ``AliasMethod`` over
    all-ones unigrams is the same distribution, drawn a slower way. The official CIFAR script can instead
    pass ``contrast_idx`` from the dataset ("exact" mode: negatives from other classes); a caller may pass
    ``contrast_idx=`` (B, K) the same way. Like the official code, a negative may coincide with the positive.

    Needs ``index`` (dataset indices of the batch) and ``num_samples`` from :meth:`setup`. The official
    weight is β = 0.8 (with CE weight 1, no KD term).
    """

    name = "crd"
    paper = "Tian, Krishnan & Isola, ICLR 2020, Contrastive Representation Distillation (arXiv:1910.10699)"
    level = "feature"
    needs = frozenset({"embedding", "index"})
    hparams = {
        "feat_dim": HParam(128, 32, 512, log=True, kind="int", doc="embedding (memory bank) dimension"),
        "nce_k": HParam(
            16384, 256, 16384, log=True, kind="int", doc="negatives per sample (≤ num_samples-1)"
        ),
        "temperature": HParam(0.07, 0.02, 0.5, log=True, doc="NCE temperature"),
        "momentum": HParam(0.5, 0.0, 0.9, doc="memory-bank momentum"),
    }
    default_weight = 0.8
    weight_range = (0.1, 5.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        s, t = self.student_shapes, self.teacher_shapes
        if s is None or t is None or s.embedding is None or t.embedding is None:
            raise ConfigError("loss 'crd' needs the student's and teacher's Shapes with an embedding")
        self.embed_s = EmbedHead(s.embedding, self.feat_dim)
        self.embed_t = EmbedHead(t.embedding, self.feat_dim)
        self.num_data = 0
        # placeholders until setup(num_samples=...) sizes the banks; loading a state_dict resizes them.
        self.register_buffer("memory_s", torch.zeros(0, self.feat_dim))
        self.register_buffer("memory_t", torch.zeros(0, self.feat_dim))
        self.register_buffer("z", torch.full((2,), -1.0))  # (Z for student-anchored, Z for teacher-anchored)

    def setup(self, **context: Any) -> None:
        n = context.get("num_samples")
        if n is None:
            return
        n = int(n)
        if n < 2:
            raise ConfigError(f"loss 'crd' needs num_samples >= 2 (the training-set size), got {n}")
        self.allocate(n)

    def allocate(self, num_samples: int) -> None:
        """(Re)initialise both memory banks for ``num_samples`` training samples and reset Z."""
        stdv = 1.0 / math.sqrt(self.feat_dim / 3)
        dev = self.memory_s.device
        self.memory_s = (torch.rand(num_samples, self.feat_dim, device=dev) * 2 - 1) * stdv
        self.memory_t = (torch.rand(num_samples, self.feat_dim, device=dev) * 2 - 1) * stdv
        self.z = torch.full((2,), -1.0, device=dev)
        self.num_data = num_samples

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        bank = state_dict.get(prefix + "memory_s")
        if bank is not None and bank.shape != self.memory_s.shape:
            self.memory_s = torch.empty_like(bank, device=self.memory_s.device)
            self.memory_t = torch.empty_like(bank, device=self.memory_t.device)
            self.num_data = int(bank.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_negatives(self) -> int:
        return max(1, min(int(self.nce_k), self.num_data - 1))

    def sample_negatives(self, batch: int, device: torch.device) -> Tensor:
        return torch.randint(0, self.num_data, (batch, self.num_negatives), device=device)

    def scores(self, e_s: Tensor, e_t: Tensor, index: Tensor, contrast_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised scores (B, K+1) of the student-anchored and teacher-anchored sides (Z set if unset)."""
        idx = torch.cat([index.view(-1, 1), contrast_idx], dim=1)
        w_t = self.memory_t[idx].detach()  # teacher bank rows (B, K+1, d)
        w_s = self.memory_s[idx].detach()
        out_s = torch.exp(torch.bmm(w_t, e_s.unsqueeze(2)).squeeze(2) / self.temperature)
        out_t = torch.exp(torch.bmm(w_s, e_t.unsqueeze(2)).squeeze(2) / self.temperature)
        if self.z[0] < 0:
            self.z[0] = out_s.detach().mean() * self.num_data
        if self.z[1] < 0:
            self.z[1] = out_t.detach().mean() * self.num_data
        return out_s / self.z[0], out_t / self.z[1]

    @torch.no_grad()
    def update_memory(self, e_s: Tensor, e_t: Tensor, index: Tensor) -> None:
        m = self.momentum
        for bank, e in ((self.memory_s, e_s), (self.memory_t, e_t)):
            rows = bank[index] * m + e.detach() * (1.0 - m)
            bank.index_copy_(0, index, F.normalize(rows, dim=1))

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        index = extra.get("index")
        if index is None:
            raise ConfigError("loss 'crd' needs the batch's dataset indices (index=...)")
        if self.num_data < 2:
            raise ConfigError("loss 'crd' was not set up: call setup(num_samples=<training-set size>) first")
        dev = self.memory_s.device
        index = torch.as_tensor(index, device=dev).long().view(-1)
        if int(index.min()) < 0 or int(index.max()) >= self.num_data:
            raise ConfigError(f"loss 'crd': sample index out of range [0, {self.num_data})")
        e_s = self.embed_s(student.embedding.float()).float()
        e_t = self.embed_t(teacher.embedding.float()).float()
        contrast_idx = extra.get("contrast_idx")
        if contrast_idx is None:
            contrast_idx = self.sample_negatives(index.numel(), dev)
        else:
            contrast_idx = torch.as_tensor(contrast_idx, device=dev).long()
        with torch.autocast(dev.type, enabled=False):  # exp(s/0.07) needs float32
            out_s, out_t = self.scores(e_s, e_t, index, contrast_idx)
            loss = nce_loss(out_s, self.num_data) + nce_loss(out_t, self.num_data)
        if self.training:
            self.update_memory(e_s, e_t, index)
        return loss


# -------------------------------------------------------------------------------------------------- BINGO
def teacher_bags(teacher_emb: Tensor, bag_size: int) -> Tensor:
    """(N, k) indices of each sample's ``bag_size`` nearest *other* samples of the batch by cosine similarity of
    the teacher's embeddings (k capped at N − 2, so that every sample keeps at least one negative)."""
    e = F.normalize(teacher_emb.detach().float().flatten(1), dim=1)
    sim = e @ e.t()
    sim.fill_diagonal_(float("-inf"))
    k = max(0, min(int(bag_size), e.shape[0] - 2))
    return sim.topk(k, dim=1).indices


def bingo_loss(student_q: Tensor, teacher_k: Tensor, bags: Tensor, temperature: float = 0.2,
               bag_weight: float = 0.5) -> Tensor:
    """Multi-positive InfoNCE of BINGO on L2-normalised student queries and teacher keys (N, D) of one batch.

    For anchor i with bag B(i) and positives P(i) = {i} ∪ B(i), each positive p is scored by its own
    cross-entropy over {p} and the negatives N(i) = the batch minus P(i) (``MulposCrossEntropy``: the other
    positives are never negatives): CE_ip = −l_ip + log(exp l_ip + Σ_{n ∈ N(i)} exp l_in), l = q·kᵀ / T.
    loss_i = (1 − bag_weight) · CE_ii + bag_weight · mean_{p ∈ B(i)} CE_ip; mean over anchors."""
    n = student_q.shape[0]
    logits = student_q.float() @ teacher_k.float().t() / temperature  # (N, N)
    positive = torch.eye(n, dtype=torch.bool, device=logits.device)
    if bags.numel():
        positive = positive.scatter(1, bags, True)
    neg_lse = torch.logsumexp(logits.masked_fill(positive, float("-inf")), dim=1, keepdim=True)  # (N, 1)
    ce = torch.logaddexp(logits, neg_lse) - logits  # (N, N): CE with positive j against N(i)
    self_term = ce.diagonal()
    if not bags.numel():
        return self_term.mean()
    bag_term = ce.gather(1, bags).mean(1)
    return ((1.0 - bag_weight) * self_term + bag_weight * bag_term).mean()


@register
class BINGO(DistillLoss):
    """Xu et al. ICLR 2022, Bag of Instances Aggregation Boosts Self-supervised Distillation (official code:
    haohang96/bingo, ``moco/builder.py`` and ``main_moco.py``).

    BINGO groups each sample with its nearest neighbours in the *teacher's* embedding space (a "bag") and trains
    the student to aggregate the bag: the student's embedding of a sample must match the teacher's embedding of
    the sample itself and of its bag members against negatives. Official conventions kept: L2-normalised
    embeddings, a trainable projection head on the student (MoCo-v2 style MLP: linear, ReLU, linear; 2048
    hidden units there, 2·D_t here) into the teacher's space, temperature 0.2 (``moco_t``), one cross-entropy
    per positive in which the other positives are not negatives (``MulposCrossEntropy``), weights 0.5 for the
    sample itself and 0.5 for its bag (``lam``), bag weight 0 during the first 10 of 200 epochs (``warmup``
    = 0.05 of training).

    Adaptation to supervised distillation in autokd (the paper distils a self-supervised teacher without
    labels; here the term is added to the labelled CE):

    - the teacher's space is its pooled penultimate embedding (``Outputs.embedding``) as it is; the official
      teacher also has its MoCo projection head, a supervised teacher has none;
    - bags and negatives come from the mini-batch: each sample's ``bag_size`` nearest other samples of the
      batch by the teacher's cosine similarity (the official bags are each image's 5 nearest neighbours over
      the whole dataset, precomputed, with one member drawn per step and fed through both networks; the mean
      over the bag here is the expectation of that draw), and the negatives are the other samples of the batch
      instead of a 65,536-entry queue of teacher keys;
    - the official CutMix term mixing an image with its bag member is left out (it changes the input batch,
      which a loss does not own); labels are not used to form bags (as in the paper).

    Weight: 1 (the official loss is the mean of its three cross-entropy groups, alone; here beside CE).
    """

    name = "bingo"
    paper = ("Xu, Fang, Zhang, Xie, Wang, Dai, Xiong & Tian ICLR 2022, Bag of Instances Aggregation Boosts "
             "Self-supervised Distillation (arXiv:2107.01691)")
    level = "relation"
    needs = frozenset({"embedding"})
    hparams = {
        "bag_size": HParam(2, 1, 8, kind="int", doc="nearest teacher neighbours per sample in its bag"),
        "temperature": HParam(0.2, 0.05, 1.0, log=True, doc="InfoNCE temperature (moco_t)"),
        "bag_weight": HParam(0.5, 0.1, 0.9, valid="[0, 1]", doc="weight of the bag members vs the sample itself"),
        "warmup": HParam(0.05, 0.0, 0.3, valid="[0, 1)", doc="fraction of training with the bag weight at 0"),
    }
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        s, t = self.student_shapes, self.teacher_shapes
        if s is None or t is None or s.embedding is None or t.embedding is None:
            raise ConfigError("loss 'bingo' needs the student's and teacher's Shapes with an embedding")
        self.head = nn.Sequential(nn.Linear(s.embedding, 2 * t.embedding), nn.ReLU(),
                                  nn.Linear(2 * t.embedding, t.embedding))

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        if student.embedding.shape[0] < 2:  # no negative in a batch of one
            return self.head(student.embedding.float()).sum() * 0.0
        q = F.normalize(self.head(student.embedding.float()).float(), dim=1)
        k = F.normalize(teacher.embedding.float(), dim=1)
        bags = teacher_bags(k, self.bag_size)
        weight = 0.0 if self.progress < self.warmup else self.bag_weight
        with torch.autocast(q.device.type, enabled=False):
            return bingo_loss(q, k, bags, self.temperature, weight)
