"""Transformer distillation terms: DeiT's distillation token, Co-advise's cross-inductive-bias tokens, TinyMIM's
relation distillation and attention-map distillation.

Conventions (read with :class:`~autokd.outputs.Outputs`): a transformer student's individual heads are in
``Outputs.heads`` (``cls``, ``dist_0``, ``dist_1``, ...; see :mod:`autokd.models.vit`), each block's queries,
keys and values in ``Outputs.attention`` and its patch grid in ``Outputs.feats`` (blocks are the stages, so
layer ``pairs`` index blocks). Computed in float32 with autocast off; KL is ``KL(teacher || student)`` from
log-softmaxes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..models.connectors import map_to_tokens, match_spatial, tokens_to_map
from ..outputs import QKV, Outputs, Shapes
from .base import DistillLoss, HParam, register
from .feature import fp32

__all__ = ["DeiT", "deit_loss", "CiT", "TinyMIM", "tinymim_loss", "relation_kl", "ViTAttention",
           "attention_maps", "align_tokens", "tinymim_teacher_block"]


# ---------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------
def _require_heads(loss: DistillLoss, names: tuple[str, ...]) -> None:
    s = loss.student_shapes
    if s is not None and not set(names) <= set(s.heads):
        raise ConfigError(f"loss {loss.name!r} trains the student heads {list(names)} but the student has "
                          f"{list(s.heads) or 'a single head'}; use a vit student with distill_tokens: "
                          f"{len(names) - 1}")


def _select_heads(loss: DistillLoss, student_model: Any, names: tuple[str, ...]) -> None:
    if student_model is not None and hasattr(student_model, "select_heads"):
        student_model.select_heads(names[1:])


def _head(out: Outputs, name: str, loss: str) -> Tensor:
    if name not in out.heads:
        raise ConfigError(f"loss {loss!r}: the student has no head {name!r} (heads: {sorted(out.heads)})")
    return out.heads[name]


def _kl_batchmean(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    s = F.log_softmax(student_logits.float() / temperature, dim=1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def _require_attention(loss: DistillLoss) -> None:
    for who, sh in (("student", loss.student_shapes), ("teacher", loss.teacher_shapes)):
        if sh is None:
            raise ConfigError(f"loss {loss.name!r} needs the student's and teacher's Shapes")
        if not sh.attention:
            raise ConfigError(f"loss {loss.name!r} distils attention between transformers, but the {who} exposes "
                              "no attention blocks (Outputs.attention is empty): use a vit / tv/vit_* model")
        if len(sh.attention) != sh.num_stages:
            raise ConfigError(f"loss {loss.name!r}: the {who}'s stages are not its transformer blocks")


def _merge(t: Tensor) -> Tensor:
    """(N, heads, L, d) -> (N, L, heads·d)."""
    n, h, length, d = t.shape
    return t.transpose(1, 2).reshape(n, length, h * d)


def _split(t: Tensor, heads: int) -> Tensor:
    """(N, L, D) -> (N, heads, L, D / heads)."""
    n, length, d = t.shape
    return t.reshape(n, length, heads, d // heads).transpose(1, 2)


def align_tokens(student: QKV, s_grid: tuple[int, int], teacher: QKV, t_grid: tuple[int, int]):
    """Both blocks' Q, K, V merged to (N, L, D) over the same tokens: the class token when both have one
    (other class-like tokens, e.g. distillation tokens, dropped), then the patch tokens, the teacher's grid
    resampled to the student's (adaptive average pooling to shrink, bilinear to grow) when they differ."""
    s_m, t_m = [_merge(a) for a in student], [_merge(a) for a in teacher]
    ps = s_m[0].shape[1] - s_grid[0] * s_grid[1]
    pt = t_m[0].shape[1] - t_grid[0] * t_grid[1]
    keep_cls = ps > 0 and pt > 0

    def pick(ts: list[Tensor], prefix: int, grid: tuple[int, int], resize: bool) -> list[Tensor]:
        out = []
        for t in ts:
            patches = t[:, prefix:]
            if resize and tuple(grid) != tuple(s_grid):
                patches = map_to_tokens(match_spatial(tokens_to_map(patches, grid), s_grid))
            out.append(torch.cat([t[:, :1], patches], 1) if keep_cls else patches)
        return out

    return pick(s_m, ps, s_grid, False), pick(t_m, pt, t_grid, True)


def relation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Row-wise KL(softmax(t/τ) ‖ softmax(s/τ)) over the last axis, averaged over every other axis (TinyMIM's
    ``KLDivLoss(reduction='none')(...).sum(-1).mean()``)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="none", log_target=True).sum(-1).mean()


def _relation(a: Tensor, b: Tensor, heads: int) -> Tensor:
    """Scaled per-head relation logits ``a bᵀ / √d`` (N, heads, L, L) of (N, L, D) ``a`` and ``b``."""
    a, b = _split(a.float(), heads), _split(b.float(), heads)
    return a @ b.transpose(-2, -1) / math.sqrt(a.shape[-1])


def _check_heads(heads: int, dims: tuple[int, ...], loss: str) -> None:
    if any(d % heads for d in dims):
        raise ConfigError(f"loss {loss!r}: cannot split widths {list(dims)} into {heads} heads; set heads to a "
                          "common divisor")


# ---------------------------------------------------------------------------------------------------------
# deit — Touvron et al., ICML 2021
# ---------------------------------------------------------------------------------------------------------
def deit_loss(dist_logits: Tensor, teacher_logits: Tensor, variant: str = "hard", temperature: float = 3.0) -> Tensor:
    """DeiT's distillation-head objective. ``hard``: CE(dist head, argmax teacher). ``soft``: τ²·KL between
    softened distributions with the official code's reduction: summed and divided by N·K (``outputs.numel()``,
    "the legacy PyTorch behaviour"), not by N."""
    if variant == "hard":
        return F.cross_entropy(dist_logits.float(), teacher_logits.argmax(1))
    s = F.log_softmax(dist_logits.float() / temperature, dim=1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(s, t, reduction="sum", log_target=True) * temperature**2 / dist_logits.numel()


@register
class DeiT(DistillLoss):
    """Touvron et al., ICML 2021: a distillation token beside the class token, with its own head.

    The recipe's CE goes to the class head (``task_head = "cls"``), this term to the distillation head
    ``dist_0`` (the student needs ``distill_tokens >= 1``): hard = CE(dist head, argmax teacher), the paper's
    better variant, ``½·CE + ½·hard`` with ``ce_weight`` 0.5 and weight 0.5; soft = τ²·KL(teacher ‖ dist head)
    with ``(1−λ)·CE + λ·soft``. Soft KL is summed and divided by N·K as in the official code (the paper's
    formula does not say; PyTorch's batch-mean would divide by N). Inference fuses the class and distillation
    heads (:mod:`autokd.models.vit`: averaged logits as in the official code by default, the paper's
    softmax sum with ``head_fusion: softmax``). The teacher is the study's (a CNN works best, per the paper).
    Defaults: hard; τ = 3 for soft (the paper's soft setting, with λ = 0.1; the official code's default τ is 1).
    """

    name = "deit"
    paper = "Touvron et al., ICML 2021, Training data-efficient image transformers & distillation through attention"
    level = "logit"
    needs = frozenset({"logits", "heads"})
    task_head = "cls"
    hparams = {
        "variant": HParam("hard", kind="categorical", choices=("hard", "soft"), doc="teacher's argmax or soft KL"),
        "temperature": HParam(3.0, 1.0, 10.0, log=True, doc="softmax temperature τ (soft variant)"),
    }
    default_weight = 0.5
    weight_range = (0.1, 2.0)
    heads_trained = ("cls", "dist_0")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        _require_heads(self, self.heads_trained)

    def setup(self, *, student_model=None, **context: Any) -> None:
        _select_heads(self, student_model, self.heads_trained)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return deit_loss(_head(student, "dist_0", self.name), teacher.logits, self.variant, self.temperature)


# ---------------------------------------------------------------------------------------------------------
# cit — Ren et al., CVPR 2022 (Co-advise)
# ---------------------------------------------------------------------------------------------------------
@register
class CiT(DistillLoss):
    """Ren et al., CVPR 2022, Co-advise: Cross Inductive Bias Distillation (CiT).

    Two lightweight teachers with different inductive biases each teach their own student token: the study's
    teacher (the *convolution* teacher) teaches ``dist_0``, an *involution* teacher teaches ``dist_1``; the
    recipe's CE goes to the class head. Term = Σ_teachers τ²·KL(teacher ‖ its head), batch-mean, τ = 1 and the
    three parts equally weighted (CE + KL_conv + KL_inv), as in the official ``main.py``. The student needs
    ``distill_tokens: 2`` (``stem: conv_inv`` adds the paper's token inductive-bias alignment); inference fuses
    the three heads (the official code averages their logits). The involution teacher (``inv_teacher``, a zoo
    model, default ``rednet_w16``) is trained once with CE on the teacher's training data and cached by the
    trainer (``helper_teacher`` in ``setup``'s context; ``inv_teacher_epochs`` 0 = the student's epochs) and run
    on each batch (``needs: input``). The paper's teachers are a RegNetY and a RedNet trained on ImageNet.
    """

    name = "cit"
    paper = "Ren et al., CVPR 2022, Co-advise: Cross Inductive Bias Distillation"
    level = "logit"
    needs = frozenset({"logits", "heads", "input", "helper_teachers"})
    task_head = "cls"
    hparams = {
        "temperature": HParam(1.0, 1.0, 8.0, log=True, doc="softmax temperature τ (official code: 1)"),
        "inv_teacher": HParam("rednet_w16", kind="categorical", doc="zoo model of the involution teacher"),
        "inv_teacher_kwargs": HParam({}, kind="categorical", doc="keyword arguments of its factory"),
        "inv_teacher_epochs": HParam(0, 0, 200, kind="int", doc="epochs to train it; 0 = the student's"),
    }
    default_weight = 1.0
    weight_range = (0.1, 4.0)
    heads_trained = ("cls", "dist_0", "dist_1")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if not isinstance(self.inv_teacher, str) or not isinstance(self.inv_teacher_kwargs, dict):
            raise ConfigError("loss 'cit': inv_teacher must be a model name and inv_teacher_kwargs a mapping")
        _require_heads(self, self.heads_trained)
        self._inv: list[Any] = []  # a plain list: the frozen teacher is neither a submodule nor trained

    def setup(self, *, student_model=None, helper_teacher=None, **context: Any) -> None:
        _select_heads(self, student_model, self.heads_trained)
        if helper_teacher is None:
            raise ConfigError("loss 'cit' needs its involution teacher: train through autokd's Trainer, or pass "
                              "context={'helper_teacher': fn(name, kwargs, epochs) -> model} to the Distiller")
        model = helper_teacher(self.inv_teacher, dict(self.inv_teacher_kwargs), self.inv_teacher_epochs or None)
        self._inv = [model.eval().requires_grad_(False)]

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, x: Tensor | None = None,
                **extra) -> Tensor:
        if not self._inv:
            raise ConfigError("loss 'cit' was not set up with its involution teacher (call setup first)")
        if x is None:
            raise ConfigError("loss 'cit' runs its involution teacher on the batch: pass x=")
        inv = self._inv[0].eval()
        with torch.no_grad():
            inv_logits = inv(x)
        return (_kl_batchmean(_head(student, "dist_0", self.name), teacher.logits, self.temperature)
                + _kl_batchmean(_head(student, "dist_1", self.name), inv_logits, self.temperature))


# ---------------------------------------------------------------------------------------------------------
# tinymim — Ren et al., CVPR 2023
# ---------------------------------------------------------------------------------------------------------
def tinymim_teacher_block(teacher_blocks: int, student_blocks: int) -> int:
    """TinyMIM's layer choice (0-based): the teacher's last block when it is no deeper than the student,
    else the block at 3/4 of its depth (block 18 of ViT-L's 24 for a ViT-B student, the official code)."""
    if teacher_blocks <= student_blocks:
        return teacher_blocks - 1
    return math.ceil(0.75 * teacher_blocks) - 1


@fp32
def tinymim_loss(student: QKV, s_grid, teacher: QKV, t_grid, heads: int = 0, temperature: float = 1.0) -> Tensor:
    """KL(R_t ‖ R_s) for R = softmax(Q·Kᵀ/√d) plus the same for softmax(V·Vᵀ/√d): Q, K, V of both blocks are
    re-split into ``heads`` heads (0 = the teacher's count) with d = width / heads on each side; rows averaged
    over samples, heads and tokens (see :func:`relation_kl`, :func:`align_tokens`)."""
    h = heads or teacher.q.shape[1]
    (sq, sk, sv), (tq, tk, tv) = align_tokens(student, s_grid, teacher, t_grid)
    _check_heads(h, (sq.shape[-1], tq.shape[-1]), "tinymim")
    return (relation_kl(_relation(sq, sk, h), _relation(tq, tk, h), temperature)
            + relation_kl(_relation(sv, sv, h), _relation(tv, tv, h), temperature))


@register
class TinyMIM(DistillLoss):
    """Ren et al., CVPR 2023, TinyMIM: relation distillation between transformers.

    Per head, the Q-K relation softmax(Q·Kᵀ/√d) and the V-V relation softmax(V·Vᵀ/√d) of a teacher block
    (the targets) and of the student's last block; loss = KL_qk + KL_vv, each row-wise KL averaged over samples,
    heads and tokens (official ``forward_kd_loss``), with an optional temperature (τ = 1: the official code).
    Heads are matched by reshaping: both sides' Q, K, V are re-split into the teacher's number of heads
    (``heads: 0``; the official student builds its last block with the teacher's head count, which splits the
    same projections the same way). Default block pair: the student's last block with the teacher's last block
    when the teacher is no deeper, else the block at 3/4 of its depth (the paper's finding that an intermediate
    teacher layer is the better target when depths differ; the official code uses block 18 of ViT-L's 24);
    ``pairs`` (indices of blocks, e.g. ``{depths: [...]}``) overrides it, several pairs are summed.

    Deviations: TinyMIM distils during MIM-style pre-training and then fine-tunes; here the term trains jointly
    with the recipe's CE. The class token is kept and other class-like tokens (distillation tokens) dropped;
    when the patch grids differ the teacher's Q, K, V grids are resampled to the student's (the paper uses
    equal grids). The sequential-distillation variant (TinyMIM*, through an assistant) is not built in.
    """

    name = "tinymim"
    paper = "Ren et al., CVPR 2023, TinyMIM: An Empirical Study of Distilling MIM Pre-trained Models"
    level = "relation"
    needs = frozenset({"feats", "attention"})
    hparams = {
        "temperature": HParam(1.0, 0.5, 4.0, log=True, doc="softmax temperature of the relation maps"),
        "heads": HParam(0, 0, 16, kind="int", doc="heads the relations are split into; 0 = the teacher's"),
    }
    default_weight = 1.0
    weight_range = (0.1, 10.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        _require_attention(self)
        t, s = self.teacher_shapes, self.student_shapes
        assert t is not None and s is not None
        self.layer_pairs = self.resolve_pairs("last") if self.pairs is not None else [
            (tinymim_teacher_block(len(t.attention), len(s.attention)), len(s.attention) - 1)]
        h = self.heads or t.attention[0][0]
        for ti, si in self.layer_pairs:
            _check_heads(h, (_width(s, si), _width(t, ti)), self.name)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(tinymim_loss(student.attention[si], _grid(student, si), teacher.attention[ti], _grid(teacher, ti),
                                self.heads, self.temperature) for ti, si in self.layer_pairs)


def _width(shapes: Shapes, block: int) -> int:
    h, _, d = shapes.attention[block]
    return h * d


def _grid(out: Outputs, block: int) -> tuple[int, int]:
    return tuple(out.feats[block].shape[-2:])  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# vit_attention — attention-map distillation (MiniLM-style attention transfer between ViTs)
# ---------------------------------------------------------------------------------------------------------
def attention_maps(q: Tensor, k: Tensor, heads: int | None = None) -> Tensor:
    """softmax(Q·Kᵀ/√d) per head, (N, heads, L, L), from (N, L, D) ``q``/``k`` split into ``heads`` heads."""
    return torch.softmax(_relation(q, k, heads or 1), dim=-1)


@fp32
def vit_attention_loss(student: QKV, s_grid, teacher: QKV, t_grid, heads: str = "auto", distance: str = "kl",
                       temperature: float = 1.0) -> Tensor:
    """Distance between the attention maps of two blocks (tokens aligned by :func:`align_tokens`): per head
    when the head counts agree and ``heads`` is ``auto``, else head-averaged maps. ``kl``: row-wise
    KL(A_t ‖ A_s) averaged over samples, heads and query tokens; ``mse``: mean squared difference of the maps."""
    hs, ht = student.q.shape[1], teacher.q.shape[1]
    (sq, sk, _), (tq, tk, _) = align_tokens(student, s_grid, teacher, t_grid)
    s_logits, t_logits = _relation(sq, sk, hs) / temperature, _relation(tq, tk, ht) / temperature
    if heads == "mean" or hs != ht:
        a_s, a_t = s_logits.softmax(-1).mean(1), t_logits.softmax(-1).mean(1)
        if distance == "mse":
            return F.mse_loss(a_s, a_t)
        return (a_t * (a_t.clamp_min(1e-12).log() - a_s.clamp_min(1e-12).log())).sum(-1).mean()
    if distance == "mse":
        return F.mse_loss(s_logits.softmax(-1), t_logits.softmax(-1))
    return relation_kl(s_logits, t_logits)


@register
class ViTAttention(DistillLoss):
    """Attention-map distillation between transformers (the attention-distribution transfer of MiniLM, Wang
    et al., NeurIPS 2020, applied to paired ViT blocks).

    A = softmax(Q·Kᵀ/√d) of each paired block; loss = KL(A_t ‖ A_s) row-wise (averaged over samples, heads and
    query tokens) or the mean squared difference (``distance: mse``), summed over the pairs. Heads are compared
    one-to-one when both blocks have as many (``heads: auto``), else (or with ``heads: mean``) the head-averaged
    maps are. Tokens are aligned as in TinyMIM (class token kept, distillation tokens dropped, the teacher's
    grid resampled to the student's). Default pairs: the stage-aligned ``auto`` block pairs. ``temperature``
    divides the attention logits of both sides before the softmax (1 = the models' own attention).
    """

    name = "vit_attention"
    paper = "Wang et al., NeurIPS 2020, MiniLM: Deep Self-Attention Distillation (attention transfer)"
    level = "relation"
    needs = frozenset({"feats", "attention"})
    hparams = {
        "distance": HParam("kl", kind="categorical", choices=("kl", "mse"), doc="distance between maps"),
        "heads": HParam("auto", kind="categorical", choices=("auto", "mean"), doc="per-head or head-averaged"),
        "temperature": HParam(1.0, 0.5, 4.0, log=True, doc="divides the attention logits"),
    }
    default_weight = 1.0
    weight_range = (0.1, 100.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        _require_attention(self)
        self.layer_pairs = self.resolve_pairs("auto")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra) -> Tensor:
        return sum(vit_attention_loss(student.attention[si], _grid(student, si), teacher.attention[ti],
                                      _grid(teacher, ti), self.heads, self.distance, self.temperature)
                   for ti, si in self.layer_pairs)
