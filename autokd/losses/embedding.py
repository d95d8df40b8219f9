"""Embedding distillation by encoding (Mou, Jia, Xu, Li, Zhang & Jin, "Distilling Word Embeddings: An Encoding
Approach", CIKM 2016, arXiv:1506.04488).

A small-embedding student does not learn its word vectors from scratch: they are the teacher's large,
task-trained embeddings passed through an encoding layer, ``e_s(w) = f(W · e_t(w) + b)``, which is trained
(with the rest of the student) by the task loss and the teacher's soft targets ("matching softmax", which the
paper combines with the encoding). After training the encoded table is computed once for the whole vocabulary
and the large table and the encoder are discarded: the deployed student has only its small table.

How autokd realises it (no official code was released; conventions are ours where the paper leaves them open):

- ``setup`` replaces the student's ``token_embedding`` (an ``nn.Embedding``, as text models expose it) by an
  :class:`EncodedEmbedding` over the teacher's ``token_embedding`` table (frozen, not copied) with a trainable
  ``nn.Linear(D_t, D_s)`` and ``activation`` f (the paper writes a generic non-linearity; default ``tanh``);
- the term's value is the matching-softmax KD term, KL(softmax(t/T) ‖ softmax(s/T)) batch-mean × T² (as
  ``kd``); weight 0 leaves the encoding approach alone with the task loss, as in the paper's main setting;
- ``finish`` (after training) bakes the encoder into a plain ``nn.Embedding(V, D_s)``: the exported student is
  an ordinary small-embedding model (same state-dict keys as one built with that ``embed_dim``).

Needs text models (``inputs = "tokens"``): student and teacher with a ``token_embedding`` over one vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register
from .logit import kd_loss

__all__ = ["EmbeddingEncoding", "EncodedEmbedding", "ACTIVATIONS"]

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "identity": lambda x: x}


class EncodedEmbedding(nn.Module):
    """``f(W · E_t[ids] + b)``: a student's token embedding computed from a frozen teacher table ``E_t``
    (V × D_t, a non-persistent buffer sharing the teacher's storage) through a trainable encoder."""

    def __init__(self, source: Tensor, dim: int, activation: str = "tanh") -> None:
        super().__init__()
        self.register_buffer("source", source.detach(), persistent=False)
        self.encoder = nn.Linear(source.shape[1], dim)
        self.activation = activation
        self.num_embeddings, self.embedding_dim = int(source.shape[0]), int(dim)

    def forward(self, ids: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation](self.encoder(F.embedding(ids, self.source)))

    @torch.no_grad()
    def table(self) -> Tensor:
        """The encoded table for the whole vocabulary, (V, D_s)."""
        return ACTIVATIONS[self.activation](self.encoder(self.source))

    def baked(self) -> nn.Embedding:
        """A plain ``nn.Embedding`` holding :meth:`table` (what the paper deploys)."""
        return nn.Embedding.from_pretrained(self.table().clone(), freeze=False)


def _table(model: nn.Module | None, who: str) -> nn.Module:
    emb = getattr(model, "token_embedding", None)
    if not isinstance(emb, (nn.Embedding, EncodedEmbedding)):
        name = getattr(model, "arch_name", type(model).__name__)
        raise ConfigError(f"loss 'embedding_encoding' needs text models with a token embedding table "
                          f"(token_embedding, e.g. textcnn); the {who} {name!r} has none")
    return emb


@register
class EmbeddingEncoding(DistillLoss):
    """Mou et al. CIKM 2016: the student's word embeddings are the teacher's, encoded to a lower dimension by a
    trained non-linear layer (installed in ``setup``, baked into a small table in ``finish``); the term's value is
    the matching-softmax KD term (batch-mean KL × T²). See the module docstring; no official code.

    Weight: 0.9 with CE weight 0.1 as the repository's KD baseline (range 0.05-2, log).
    """

    name = "embedding_encoding"
    paper = "Mou et al. CIKM 2016, Distilling Word Embeddings: An Encoding Approach (arXiv:1506.04488)"
    level = "logit"
    needs = frozenset({"logits", "teacher_model"})
    inputs = "tokens"
    hparams = {
        "temperature": HParam(4.0, 1.0, 20.0, log=True, doc="softmax temperature T of the matching-softmax term"),
        "activation": HParam("tanh", kind="categorical", choices=tuple(ACTIVATIONS), doc="the encoder's f"),
    }
    default_weight = 0.9
    weight_range = (0.05, 2.0)

    def setup(self, **context: Any) -> None:
        student, teacher = context.get("student_model"), context.get("teacher_model")
        s_emb, t_emb = _table(student, "student"), _table(teacher, "teacher")
        t_table = t_emb.weight if isinstance(t_emb, nn.Embedding) else t_emb.table()
        if s_emb.num_embeddings != t_table.shape[0]:
            raise ConfigError(f"loss 'embedding_encoding': student and teacher vocabularies differ "
                              f"({s_emb.num_embeddings} vs {t_table.shape[0]} tokens)")
        encoded = EncodedEmbedding(t_table, s_emb.embedding_dim, self.activation)
        student.token_embedding = encoded.to(next(student.parameters()).device)

    def finish(self, student: nn.Module) -> None:
        emb = getattr(student, "token_embedding", None)
        if isinstance(emb, EncodedEmbedding):
            student.token_embedding = emb.baked()

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return kd_loss(student.logits, teacher.logits, self.temperature)
