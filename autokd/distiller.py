"""The :class:`Distiller`: student + distillation terms + frozen teacher, usable in any training loop.

:meth:`Distiller.from_recipe` is the one way a recipe's terms and connectors are built — autokd's trainer
and a user's own loop alike — so a recipe behaves identically in both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import losses
from .errors import ConfigError
from .models import shapes
from .outputs import Outputs
from .pairs import resolve_pairs

if TYPE_CHECKING:
    from .recipe import Recipe

__all__ = ["Distiller", "Term", "Step"]

#: what a term may need without the models' stage shapes being probed (no connectors)
_SHAPELESS_NEEDS = frozenset({"logits", "index", "input", "heads", "tokens", "helper_teachers"})
#: what makes the distiller run ``forward_outputs`` instead of the plain ``forward``
_OUTPUT_NEEDS = frozenset({"feats", "preacts", "embedding", "heads", "tokens", "attention"})


class Term(nn.Module):
    """``weight × loss`` with a unique ``key`` used in logs."""

    def __init__(self, key: str, weight: float, loss: nn.Module) -> None:
        super().__init__()
        self.key = key
        self.weight = float(weight)
        self.loss = loss


@dataclass
class Step:
    """What one training step of a :class:`Distiller` computed: the named loss tensors (``ce``, one per term,
    ``task``, ``distill``, ``loss``) and the student's :class:`Outputs` (schemes such as DML, DLB and the
    mean teacher read the student's logits from here)."""

    losses: dict[str, Tensor]
    student: Outputs


def _as_fp32(o: Outputs) -> Outputs:
    return o.apply(lambda t: t.float() if t.is_floating_point() else t)


@contextlib.contextmanager
def _fp32_losses(x: Tensor) -> Iterator[Callable[[Outputs], Outputs]]:
    """Under autocast, disable it and hand out a converter of :class:`Outputs` to fp32: distillation losses
    (softmax at high temperature, Gram matrices, KL sums) are computed in fp32. Without autocast, a no-op."""
    kind = x.device.type
    if not torch.is_autocast_enabled(kind):
        yield lambda o: o
        return
    with torch.autocast(device_type=kind, enabled=False):
        yield _as_fp32


def _build_terms(recipe: Recipe, student: nn.Module, teacher: nn.Module | None,
                 input_shape: tuple[int, ...] | None) -> nn.ModuleList:
    if recipe.terms and teacher is None:
        raise ConfigError("this recipe has distillation terms but no teacher was given")
    if input_shape is None:
        shaped = [t.loss for t in recipe.terms
                  if losses.get(t.loss).needs - _SHAPELESS_NEEDS or t.pairs is not None]
        if shaped:
            raise ConfigError(
                f"Distiller: terms {', '.join(sorted(set(shaped)))} build connectors from the models' "
                "stage shapes; pass input_shape=(C, H, W)")
    probe = bool(recipe.terms) and input_shape is not None
    s_shapes = shapes(student, tuple(input_shape)) if probe else None
    t_shapes = shapes(teacher, tuple(input_shape)) if probe else None
    seen: dict[str, int] = {}
    terms = nn.ModuleList()
    for i, spec in enumerate(recipe.terms):
        pairs = resolve_pairs(spec.pairs, t_shapes, s_shapes, where=f"terms[{i}] ({spec.loss}).pairs")
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

    CE applies to the student's prediction ``Outputs.logits``, or to the head a term names in ``task_head``
    (DeiT, CiT: the class-token head, while their own terms train the distillation heads).
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        recipe: Recipe,
        input_shape: Iterable[int] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        terms = _build_terms(recipe, student, teacher, None if input_shape is None else tuple(input_shape))
        self.terms = terms
        self.ce_weight = float(recipe.ce_weight)
        self.needs = frozenset().union(*(t.loss.needs for t in terms)) if len(terms) else frozenset()
        heads = sorted({t.loss.task_head for t in terms if t.loss.task_head})
        if len(heads) > 1:
            raise ConfigError(f"terms ask for cross-entropy on different student heads {heads}; combine at most "
                              "one of those terms")
        self.task_head: str | None = heads[0] if heads else None
        ctx = {"teacher_model": teacher, "student_model": student, **(context or {})}
        for t in terms:
            t.loss.setup(**ctx)

    @classmethod
    def from_recipe(cls, recipe: Recipe, teacher: nn.Module | None, student: nn.Module,
                    input_shape: Iterable[int] | None = None, context: dict[str, Any] | None = None) -> Distiller:
        """Build the recipe's terms (losses, connectors, pairs resolved against the probed stage shapes) around
        ``student`` and the frozen ``teacher``. ``teacher`` may be ``None`` for a recipe without terms."""
        return cls(teacher, student, recipe, input_shape=input_shape, context=context)

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
        return bool(self.needs & _OUTPUT_NEEDS) or self.task_head is not None

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

    def finish(self) -> None:
        """Call once after training: terms that trained something the student keeps fold it into the student
        (e.g. ``embedding_encoding`` replaces the encoder by the small embedding table it computes). The trainer
        calls it; in your own loop call it before exporting the student."""
        for t in self.terms:
            t.loss.finish(self.student)

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> Outputs:
        if self.teacher is None:
            raise ConfigError("this recipe has distillation terms but no teacher was given")
        self.teacher.eval()
        out = self.teacher.forward_outputs(x) if self.needs_feats else Outputs(logits=self.teacher(x))
        return out.detach()

    # -- the loss -------------------------------------------------------------------------------
    def step(
        self,
        x: Tensor,
        y: Tensor,
        *,
        teacher_outputs: Outputs | None = None,
        index: Tensor | None = None,
        term_scales: dict[str, float] | None = None,
        full_outputs: bool = False,
    ) -> Step:
        """One step's losses and the student's outputs. ``term_scales`` multiplies terms by key (0 skips a
        term); ``teacher_outputs`` replaces the teacher's forward (cached or scheme-provided outputs);
        ``full_outputs`` asks for the student's whole :class:`Outputs` (stage features, embedding) even when
        no term needs them (schemes whose own losses read them, e.g. auxiliary heads on the student's stages)."""
        full = full_outputs or self.needs_feats
        s_out = self.student.forward_outputs(x) if full else Outputs(logits=self.student(x))
        out: dict[str, Tensor] = {}
        task_logits = s_out.logits
        if self.task_head is not None:
            if self.task_head not in s_out.heads:
                raise ConfigError(f"the student has no head {self.task_head!r} (its heads: {sorted(s_out.heads)})")
            task_logits = s_out.heads[self.task_head]
        ce = F.cross_entropy(task_logits.float(), y)
        out["ce"] = ce
        task = self.ce_weight * ce
        distill = torch.zeros((), device=ce.device)
        scales = term_scales or {}
        active = [t for t in self.terms if t.weight * scales.get(t.key, 1.0) != 0.0]
        if active:
            t_out = teacher_outputs if teacher_outputs is not None else self.teacher_outputs(x)
            extra: dict[str, Any] = {}
            if "index" in self.needs:
                if index is None:
                    raise ConfigError("a term needs sample indices (index=...) but none were given")
                extra["index"] = index
            if "input" in self.needs:
                extra["x"] = x
            with _fp32_losses(x) as to_fp32:  # under autocast: terms see fp32 outputs, computed in fp32
                s32, t32 = to_fp32(s_out), to_fp32(t_out)
                for t in active:
                    value = t.loss(s32, t32, y, **extra)
                    out[t.key] = value
                    distill = distill + (t.weight * scales.get(t.key, 1.0)) * value
        for t in self.terms:
            out.setdefault(t.key, torch.zeros((), device=ce.device))
        out["task"] = task
        out["distill"] = distill
        out["loss"] = task + distill
        return Step(out, s_out)

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        *,
        teacher_outputs: Outputs | None = None,
        index: Tensor | None = None,
        term_scales: dict[str, float] | None = None,
    ) -> dict[str, Tensor]:
        """The named loss tensors of :meth:`step` (``ce``, one per term, ``task``, ``distill``, ``loss``)."""
        return self.step(x, y, teacher_outputs=teacher_outputs, index=index, term_scales=term_scales).losses
