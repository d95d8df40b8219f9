"""Contrastive representation distillation (CRD)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = ["CRD", "nce_loss", "EmbedHead"]

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
