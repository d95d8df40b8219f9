"""Jacobian (input-gradient) matching."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from ..outputs import Outputs
from .base import DistillLoss, HParam, register

__all__ = [
    "JacobianMatching",
    "input_gradient",
    "jacobian_distance",
    "keep_bn_statistics",
    "batch_stats_as_constants",
]


@contextmanager
def keep_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Run extra forwards without touching BatchNorm running statistics (momentum 0, counter restored)."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            nbt = None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
            saved.append((m, m.momentum, nbt))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, nbt in saved:
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


@contextmanager
def batch_stats_as_constants(model: nn.Module, x: Tensor) -> Iterator[None]:
    """Make training-mode BatchNorm layers use this batch's statistics as *constants*.

    A no-grad probe forward on ``x`` records each training-mode BatchNorm's batch mean and (biased) variance;
    inside the context those layers run in eval mode with the recorded statistics as running statistics. The
    function computed is the same as in training mode, but samples no longer interact through the statistics,
    so ``∂ Σ_b z_b / ∂ x_b`` is each sample's own Jacobian (in training mode the other samples' outputs add an
    O(1) cross-sample term). Running statistics are left untouched.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if not bns:
        yield
        return
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def record(mod: nn.Module, inp: tuple[Tensor, ...]) -> None:
        h = inp[0].detach().transpose(0, 1).flatten(1).float()
        stats[mod] = (h.mean(1), h.var(1, unbiased=False))

    handles = [m.register_forward_pre_hook(record) for m in bns]
    try:
        with torch.no_grad(), keep_bn_statistics(model):
            model(x)
    finally:
        for hd in handles:
            hd.remove()
    saved = [(m, m.running_mean, m.running_var) for m in bns]
    try:
        for m in bns:
            mean, var = stats[m]
            m.running_mean, m.running_var = mean.to(m.running_mean.dtype), var.to(m.running_var.dtype)
            m.training = False
        yield
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var
            m.training = True


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def input_gradient(
    model: nn.Module, x: Tensor, classes: Tensor | None, *, create_graph: bool, bn_stats: str = "running"
) -> tuple[Tensor, Tensor]:
    """(∂ z_{c_b}(x_b) / ∂ x_b for every sample b, logits z). ``classes`` None: the model's own top class.

    One backward of Σ_b z_{c_b}(x_b) with respect to a fresh leaf copy of ``x``. For this to be each sample's
    own Jacobian, samples must not interact: ``bn_stats="running"`` evaluates the model in eval mode
    (BatchNorm with running statistics: the per-sample inference function), ``"batch"`` keeps this batch's
    statistics as constants (:func:`batch_stats_as_constants`). Only ``x``'s gradient is requested: no
    parameter ``.grad`` is written."""
    xg = x.detach().clone().requires_grad_(True)
    mode = eval_mode(model) if bn_stats == "running" else batch_stats_as_constants(model, xg.detach())
    with torch.enable_grad(), mode:
        logits = model(xg)
        if classes is None:
            classes = logits.detach().argmax(1)
        picked = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(picked, xg, create_graph=create_graph)
    return grad, logits


def jacobian_distance(j_s: Tensor, j_t: Tensor) -> Tensor:
    """Batch mean of ‖ J_s/‖J_s‖₂ − J_t/‖J_t‖₂ ‖₂² over per-sample flattened input-gradients."""
    dtype = torch.promote_types(j_s.dtype, torch.float32)  # at least float32 (bf16/fp16 under autocast)
    s = F.normalize(j_s.flatten(1).to(dtype), dim=1)
    t = F.normalize(j_t.flatten(1).to(dtype), dim=1)
    return (s - t).pow(2).sum(1).mean()


@register
class JacobianMatching(DistillLoss):
    """Knowledge Transfer with Jacobian Matching (Srinivas & Fleuret, ICML 2018).

    Matches the input-gradients of one output of the teacher and the student (the paper matches a single
    output's Jacobian rather than all K: the teacher's top class by default, or the label with
    ``target: label``): ``J = ∂ z_c / ∂ x`` of the pre-softmax output ``z_c``, each L2-normalised per sample,
    and ``loss = mean_b ‖ J_s/‖J_s‖₂ − J_t/‖J_t‖₂ ‖₂²`` (the paper's squared-ℓ2 loss on normalised Jacobians,
    derived from its equivalence with distillation under input noise). We found no released official code,
    so the conventions are the paper's.

    The student's forward is recomputed on ``x.requires_grad_()`` and differentiated with
    ``create_graph=True`` (the loss back-propagates through the input-gradient into the student's weights);
    the teacher's Jacobian needs a graph through the teacher too, but only ``x``'s gradient is taken and no
    graph is kept, so the teacher's parameters never accumulate gradients.

    BatchNorm: differentiating Σ_b z_b through a training-mode batch would mix in other samples' outputs
    through the batch statistics (an O(1) cross-sample term), so Jacobians are per-sample functions: by
    default (``bn_stats: running``) both models are differentiated in eval mode, i.e. the inference function
    the student will be (well conditioned; early in training it uses young running statistics); ``bn_stats:
    batch`` keeps the training-mode function with this batch's statistics frozen as constants
    (:func:`batch_stats_as_constants`), which is ill-conditioned for tiny maps (e.g. 1×1 maps of few
    channels). Running statistics are never updated by these extra forwards. Needs the input batch (``x=``)
    and both models from :meth:`setup`. Suggested weight 1 (the paper tunes it per experiment).
    """

    name = "jacobian"
    paper = "Srinivas & Fleuret, ICML 2018, Knowledge Transfer with Jacobian Matching (arXiv:1803.00443)"
    level = "feature"
    needs = frozenset({"logits", "input", "teacher_model"})
    hparams = {
        "target": HParam(
            "teacher_top",
            kind="categorical",
            choices=("teacher_top", "label"),
            doc="which output's Jacobian: the teacher's top class or the label",
        ),
        "bn_stats": HParam(
            "running",
            kind="categorical",
            choices=("running", "batch"),
            doc="student BatchNorm statistics for the Jacobian: running (eval) or batch constants",
        ),
    }
    default_weight = 1.0
    weight_range = (0.01, 100.0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        object.__setattr__(self, "_teacher_model", None)
        object.__setattr__(self, "_student_model", None)

    def setup(self, **context: Any) -> None:
        if context.get("teacher_model") is not None:
            object.__setattr__(self, "_teacher_model", context["teacher_model"])
        if context.get("student_model") is not None:
            object.__setattr__(self, "_student_model", context["student_model"])

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor, **extra: Any) -> Tensor:
        x = extra.get("x")
        if x is None:
            raise ConfigError("loss 'jacobian' needs the input batch (x=...)")
        if self._teacher_model is None or self._student_model is None:
            raise ConfigError("loss 'jacobian' needs both models: call setup(teacher_model=, student_model=)")
        classes = None if self.target == "teacher_top" else target
        j_t, logits_t = input_gradient(self._teacher_model, x, classes, create_graph=False)
        if classes is None:
            classes = logits_t.detach().argmax(1)
        j_s, _ = input_gradient(self._student_model, x, classes, create_graph=True, bn_stats=self.bn_stats)
        return jacobian_distance(j_s, j_t.detach())
