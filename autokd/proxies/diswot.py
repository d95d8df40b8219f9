"""DisWOT (Dong et al., "DisWOT: Student Architecture Search for Distillation WithOut Training", CVPR 2023):
how similar an untrained student's semantics and sample relations are to the trained teacher's.

Both scores are negative Frobenius distances between row-L2-normalised Gram matrices (higher = more
similar = predicted better distilled accuracy), so students of any width and resolution compare:

- **semantic** (``diswot_semantic``): the class × class Gram of the classifier-weight gradients,
  ``g = ∂CE/∂W_cls = (softmax(z) - onehot(y))ᵀ e / N`` (K × D, ``e`` the pooled embedding), ``G = g gᵀ``
  (K × K). This is the form of DisWOT's released code (its "inter-class" similarity); the paper's
  equal-channel Grad-CAM comparison is not needed because ``G`` is K × K whatever the student's width.
  ``g`` is computed in closed form from the embedding and logits (exact for the zoo's linear classifier
  on the pooled embedding), so no backward pass is run.
- **relation** (``diswot_relation``): the batch × batch similarity Gram of SP (Tung & Mori, ICCV 2019) on
  the last stage's feature maps, ``G = f fᵀ`` with ``f`` the flattened map (N × CHW), rows L2-normalised.

``diswot`` = semantic + relation (each a negative distance, summed as in the paper). BN: the student runs
in train mode (batch statistics) on the proxy's private copy, the teacher in eval mode.

Transformer candidates: the embedding is the class token and the last stage is the last block's patch grid
(see :class:`~autokd.outputs.Outputs`); with distillation heads the logits are their fusion, so ``g`` is then
the gradient with respect to a classifier on the class token standing in for the fused heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import PROXIES, Proxy, embedding_of, outputs_of, teacher_outputs

_PAPER = "Dong et al., DisWOT, CVPR 2023"

__all__ = ["DisWOT", "DisWOTSemantic", "DisWOTRelation", "semantic_gram", "relation_gram", "gram_distance"]


def semantic_gram(logits: Tensor, embedding: Tensor, y: Tensor) -> Tensor:
    """Row-normalised ``g gᵀ`` with ``g = ∂CE_mean/∂W = (softmax(logits) - onehot(y))ᵀ embedding / N``."""
    logits, embedding = logits.detach().double(), embedding.detach().double()
    resid = logits.softmax(1) - F.one_hot(y.long(), logits.shape[1]).double()
    g = resid.T @ embedding / logits.shape[0]
    return F.normalize(g @ g.T, dim=1)


def relation_gram(feat: Tensor) -> Tensor:
    """SP's row-normalised batch × batch Gram of the flattened feature maps."""
    f = feat.detach().double().flatten(1)
    return F.normalize(f @ f.T, dim=1)


def gram_distance(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - b))


class _DisWOTBase(Proxy):
    needs_teacher = True
    bn_mode = "train"
    paper = "Dong et al., DisWOT, CVPR 2023"
    semantic = True
    relation = True

    def score(self, model, teacher, x, y) -> float:
        t = teacher_outputs(teacher, x)
        with torch.no_grad():
            s = outputs_of(model, x)
        total = 0.0
        if self.semantic:
            total -= gram_distance(semantic_gram(s.logits, embedding_of(s), y),
                                   semantic_gram(t.logits, embedding_of(t), y))
        if self.relation:
            fs = s.feats[-1] if s.feats else embedding_of(s)
            ft = t.feats[-1] if t.feats else embedding_of(t)
            total -= gram_distance(relation_gram(fs), relation_gram(ft))
        return total


@PROXIES.register("diswot", needs_teacher=True, bn_mode="train", paper=_PAPER)
class DisWOT(_DisWOTBase):
    """DisWOT: ``-‖Ĝ^sem_s - Ĝ^sem_t‖_F - ‖Ĝ^rel_s - Ĝ^rel_t‖_F`` (see the module docstring). Higher =
    better. BN: student train mode, teacher eval mode."""

    name = "diswot"


@PROXIES.register("diswot_semantic", needs_teacher=True, bn_mode="train", paper=_PAPER)
class DisWOTSemantic(_DisWOTBase):
    """DisWOT's semantic score alone: ``-‖Ĝ^sem_s - Ĝ^sem_t‖_F`` over class × class Grams of the
    classifier-weight gradients. Higher = better. BN: student train mode, teacher eval mode."""

    name = "diswot_semantic"
    relation = False


@PROXIES.register("diswot_relation", needs_teacher=True, bn_mode="train", paper=_PAPER)
class DisWOTRelation(_DisWOTBase):
    """DisWOT's relation score alone: ``-‖Ĝ^rel_s - Ĝ^rel_t‖_F`` over SP's batch × batch Grams of the last
    stage. Higher = better. BN: student train mode, teacher eval mode."""

    name = "diswot_relation"
    semantic = False
