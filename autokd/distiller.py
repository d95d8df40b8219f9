"""The :class:`Distiller`: student + distillation terms + frozen teacher, usable in any training loop.

The trainer uses this same class, so a recipe behaves identically in autokd's search and in a user's loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .outputs import Outputs, Shapes

if TYPE_CHECKING:
    from .recipe import Recipe

__all__ = ["Distiller", "Term", "build_terms", "auto_pairs", "depth_pairs"]


class Term(nn.Module):
    """``weight × loss`` with a unique ``key`` used in logs."""

    def __init__(self, key: str, weight: float, loss: nn.Module) -> None:
        super().__init__()
        self.key = key
        self.weight = float(weight)
        self.loss = loss


def auto_pairs(teacher: Shapes, student: Shapes) -> list[tuple[int, int]]:
    """Stage-aligned (teacher stage, student stage) pairs: one-to-one, in depth order, deepest stages paired.

    The stems (stage 0) are left out unless a model has a single stage. With ``k`` = the smaller number of
    remaining stages, each of the ``k`` stages of the shorter list is paired with a distinct stage of the
    longer one, keeping the order and always pairing the two deepest stages; the alignment chosen (dynamic
    programming) minimises Σ |relative-depth gap| + 0.1·(octaves of spatial mismatch), so relative depth
    decides and equal resolution breaks near-ties. Same-family pairs come out as (1, 1), (2, 2), ...;
    resnet32x4 (4 stages) with mobilenetv2 (5 stages) gives 3 pairs, at 8×8 and 32×32 inputs alike.
    """
    import math

    nt, ns = teacher.num_stages, student.num_stages
    if nt == 0 or ns == 0:
        raise ConfigError("pairs: auto needs models that expose stage features (Outputs.feats is empty)")
    t_idx = list(range(1, nt)) if nt > 1 else [0]
    s_idx = list(range(1, ns)) if ns > 1 else [0]

    def rel(i: int, n: int) -> float:
        return i / (n - 1) if n > 1 else 1.0

    def cost(ti: int, si: int) -> float:
        t_hw, s_hw = teacher.feats[ti][1:], student.feats[si][1:]
        octaves = sum(abs(math.log2(max(1, a) / max(1, b))) for a, b in zip(t_hw, s_hw, strict=False)) / 2
        return abs(rel(ti, nt) - rel(si, ns)) + 0.1 * octaves

    short_is_t = len(t_idx) <= len(s_idx)
    short, long_ = (t_idx, s_idx) if short_is_t else (s_idx, t_idx)
    k, m = len(short), len(long_)

    def c(i: int, j: int) -> float:
        return cost(short[i], long_[j]) if short_is_t else cost(long_[j], short[i])

    # best[i][j]: least cost of aligning short[:i+1] with short[i] -> long_[j]; j ranges so that the rest fit
    inf = float("inf")
    best = [[inf] * m for _ in range(k)]
    back = [[-1] * m for _ in range(k)]
    for j in range(m - k + 1):
        best[0][j] = c(0, j)
    for i in range(1, k):
        for j in range(i, m - k + i + 1):
            prev = min(range(i - 1, j), key=lambda jj: best[i - 1][jj])
            best[i][j] = best[i - 1][prev] + c(i, j)
            back[i][j] = prev
    js = [m - 1]
    for i in range(k - 1, 0, -1):
        js.append(back[i][js[-1]])
    js.reverse()
    return [(short[i], long_[j]) if short_is_t else (long_[j], short[i]) for i, j in enumerate(js)]


def depth_pairs(teacher: Shapes, student: Shapes, depths) -> list[tuple[int, int]]:
    """Pairs at relative depths in (0, 1]: depth d pairs teacher stage round(d·(T−1)) with student stage
    round(d·(S−1)) (1.0 = the deepest stages). Duplicates collapse."""
    nt, ns = teacher.num_stages, student.num_stages
    if nt == 0 or ns == 0:
        raise ConfigError("pairs: searched pairs need models that expose stage features")
    out = {(round(d * (nt - 1)), round(d * (ns - 1))) for d in depths}
    return sorted(out, key=lambda p: p[1])


def build_terms(recipe: Recipe, student: nn.Module, teacher: nn.Module | None, input_shape) -> nn.ModuleList:
    from . import losses
    from .models import shapes

    if recipe.terms and teacher is None:
        raise ConfigError("this recipe has distillation terms but no teacher was given")
    probe = bool(recipe.terms) and input_shape is not None
    s_shapes = shapes(student, tuple(input_shape)) if probe else None
    t_shapes = shapes(teacher, tuple(input_shape)) if probe else None
    seen: dict[str, int] = {}
    terms = nn.ModuleList()
    for spec in recipe.terms:
        pairs = spec.pairs
        if pairs == "auto":
            pairs = auto_pairs(t_shapes, s_shapes)
        elif isinstance(pairs, dict):
            pairs = depth_pairs(t_shapes, s_shapes, pairs["depths"])
        if pairs is not None:
            for ti, si in pairs:
                if not (0 <= ti < t_shapes.num_stages and 0 <= si < s_shapes.num_stages):
                    raise ConfigError(
                        f"terms[{spec.loss}].pairs: ({ti}, {si}) out of range; the teacher has stages "
                        f"0..{t_shapes.num_stages - 1}, the student 0..{s_shapes.num_stages - 1}"
                    )
        loss = losses.create(spec.loss, student=s_shapes, teacher=t_shapes, pairs=pairs, **spec.params)
        n = seen.get(spec.loss, 0)
        seen[spec.loss] = n + 1
        key = spec.loss if n == 0 else f"{spec.loss}_{n}"
        terms.append(Term(key, spec.weight, loss))
    return terms


class Distiller(nn.Module):
    """Student + distillation terms (with their connectors) + a frozen teacher.

    ``distiller(x, y)`` returns a dict of named loss tensors: ``ce`` and one entry per term (unweighted),
    ``task`` (= ce_weight·CE), ``distill`` (= Σ weight·term) and their sum under ``"loss"``.

    The teacher is frozen and kept in eval mode even when the distiller is put in train mode; its outputs
    are computed under ``no_grad`` unless precomputed ones are passed as ``teacher_outputs``.

    ``input_shape`` (C, H, W) is needed only when a term builds connectors from the models' stage shapes
    (feature-level terms); logit-level recipes work without it.

    ``context`` is handed to every term's ``setup`` besides the two models: e.g. ``num_samples`` (training-set
    size, for memory banks such as CRD's). The trainer fills it; in your own loop pass what your terms need.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        recipe: Recipe,
        input_shape: Iterable[int] | None = None,
        terms: nn.ModuleList | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        if terms is None:
            if input_shape is None:
                from . import losses

                shaped = [t.loss for t in recipe.terms if losses.get(t.loss).needs - {"logits", "index", "input"}
                          or t.pairs is not None]
                if shaped:
                    raise ConfigError(
                        f"Distiller: terms {', '.join(sorted(set(shaped)))} build connectors from the models' "
                        "stage shapes; pass input_shape=(C, H, W)")
            terms = build_terms(recipe, student, teacher, None if input_shape is None else tuple(input_shape))
        self.terms = terms
        self.ce_weight = float(recipe.ce_weight)
        self.needs = frozenset().union(*(t.loss.needs for t in terms)) if len(terms) else frozenset()
        ctx = {"teacher_model": teacher, "student_model": student, **(context or {})}
        for t in terms:
            t.loss.setup(**ctx)

    # -- modes and parameters -------------------------------------------------------------------
    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters plus the terms' own (connectors, learnable temperatures); never the teacher's."""
        return [p for p in list(self.student.parameters()) + list(self.terms.parameters()) if p.requires_grad]

    @property
    def needs_feats(self) -> bool:
        return bool(self.needs & {"feats", "preacts", "embedding"})

    def inference_model(self) -> nn.Module:
        """The model to evaluate and export: the student, or the student wrapped by a term that the student
        needs at inference (SimKD)."""
        for t in self.terms:
            head = t.loss.student_head(self.student)
            if head is not None:
                return head
        return self.student

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        for t in self.terms:
            t.loss.set_progress(epoch, total_epochs)

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> Outputs:
        if self.teacher is None:
            raise ConfigError("this recipe has distillation terms but no teacher was given")
        self.teacher.eval()
        out = self.teacher.forward_outputs(x) if self.needs_feats else Outputs(logits=self.teacher(x))
        return out.detach()

    # -- the loss -------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        y: Tensor,
        *,
        teacher_outputs: Outputs | None = None,
        index: Tensor | None = None,
        term_scales: dict[str, float] | None = None,
        keep_logits: bool = False,
    ) -> dict[str, Tensor]:
        s_out = self.student.forward_outputs(x) if self.needs_feats else Outputs(logits=self.student(x))
        out: dict[str, Tensor] = {}
        ce = F.cross_entropy(s_out.logits.float(), y)
        out["ce"] = ce
        task = self.ce_weight * ce
        distill = torch.zeros((), device=ce.device)
        active = [t for t in self.terms if t.weight * (term_scales or {}).get(t.key, 1.0) != 0.0]
        if active:
            t_out = teacher_outputs if teacher_outputs is not None else self.teacher_outputs(x)
            extra: dict[str, Any] = {}
            if "index" in self.needs:
                if index is None:
                    raise ConfigError("a term needs sample indices (index=...) but none were given")
                extra["index"] = index
            if "input" in self.needs:
                extra["x"] = x
            for t in active:
                scale = (term_scales or {}).get(t.key, 1.0)
                value = t.loss(s_out, t_out, y, **extra)
                out[t.key] = value
                distill = distill + (t.weight * scale) * value
        for t in self.terms:
            out.setdefault(t.key, torch.zeros((), device=ce.device))
        out["task"] = task
        out["distill"] = distill
        out["loss"] = task + distill
        if keep_logits:  # for the trainer's schemes (DML, DLB, mean teacher); not a loss
            out["_logits"] = s_out.logits
        return out
