"""ResKD: a res-student learns the knowledge gap between the teacher and the trained student."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import models
from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ..outputs import Outputs
from ._helpers import LOGIT_NEEDS, model_fingerprint
from .base import Scheme, register
from .takd import _WIDTH_BUILDERS

__all__ = ["ResKD", "ResidualStudent", "default_res_student", "gap_loss"]


def default_res_student(student: nn.Module, spec) -> tuple[str, dict[str, Any]]:
    """The student's family at half its width (``cnn`` / ``vgg``); other families: the student's own spec."""
    builder = _WIDTH_BUILDERS.get(type(student).__name__)
    if builder is None:
        return spec.name, dict(spec.kwargs)
    w = student.width
    half = max(1, round(w / 2)) if isinstance(w, int) else w / 2
    return builder, {"depth": student.depth, "width": half}


def gap_loss(res_logits: Tensor, teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """The res-student's regression onto the knowledge gap: ``Σ_k (z_R − (z_T − z_S))² / N`` (teacher and
    student detached)."""
    gap = teacher_logits.detach().float() - student_logits.detach().float()
    return (res_logits.float() - gap).pow(2).sum() / res_logits.shape[0]


class ResidualStudent(nn.Module):
    """The exported ResKD model: ``z_S(x) + z_R(x)``. With ``confidence`` c > 0 (the paper's sample-adaptive
    inference) the res-student runs only on the samples whose student confidence max softmax(z_S) is below c;
    the others keep ``z_S``."""

    def __init__(self, student: nn.Module, res_student: nn.Module, confidence: float = 0.0) -> None:
        super().__init__()
        self.student, self.res_student, self.confidence = student, res_student, float(confidence)

    def forward(self, x: Tensor) -> Tensor:
        z = self.student(x)
        if self.confidence <= 0:
            return z + self.res_student(x)
        need = F.softmax(z.float(), 1).amax(1) < self.confidence
        if not bool(need.any()):
            return z
        z = z.clone()
        z[need] = z[need] + self.res_student(x[need]).to(z.dtype)
        return z


@register
class ResKD(Scheme):
    """ResKD: Residual-Guided Knowledge Distillation (Li, Li, Omar, Wu & Li, IEEE TIP 2021).

    The student S is trained by the recipe (any terms). A lighter res-student R (``res_student`` /
    ``res_student_kwargs``; default the student's family at half width, :func:`default_res_student`) learns
    the knowledge gap between the teacher and S: R's loss (logged ``reskd``; it trains R only, S's logits are
    detached) is the recipe's loss on the combined student ``z_S + z_R`` — ``ce_weight``·CE and every
    logit-level term against the teacher — plus ``gap_weight`` × :func:`gap_loss`, R's logits regressed onto
    ``z_T − z_S``. R's classifier starts at zero, so the combination starts as S. R trains in the same
    optimiser as S (``extra_parameters``), alongside S from the first step, and alone for the last
    ``residual_fraction`` of the steps, S then frozen (eval mode, no update) so that R fits the final S's
    gap. One res-student (the paper repeats the process for more). The exported model is
    :class:`ResidualStudent`, S + R as one inference model (``confidence`` > 0: the paper's sample-adaptive
    inference, R skipped on samples S is confident about; 0 = R always runs); its parameter count and FLOPs
    include R.

    Difference from the paper: there S is trained to the end first and R afterwards, in separate full runs;
    here both share the recipe's epoch budget and schedule (R learns the gap of an S still training until
    the freeze), so that a ResKD trial costs one fit.
    """

    name = "reskd"
    paper = "Li, Li, Omar, Wu & Li, IEEE TIP 2021, ResKD: Residual-Guided Knowledge Distillation"
    hparams = {
        "res_student": HParam(None, kind="categorical", doc="zoo model of the res-student; null = default"),
        "res_student_kwargs": HParam({}, kind="categorical", doc="keyword arguments of the res-student's factory"),
        "residual_fraction": HParam(0.2, 0.0, 0.5, valid="[0, 1)", doc="share of the steps, at the end, where only "
                                                                      "the res-student trains (S frozen)"),
        "gap_weight": HParam(1.0, 0.1, 10.0, log=True, valid=">= 0", doc="weight of the gap regression"),
        "confidence": HParam(0.0, 0.0, 0.99, valid="[0, 1)", doc="sample-adaptive inference threshold; 0 = off"),
    }
    helper_loss_keys = frozenset({"reskd"})

    def __init__(self, **params) -> None:
        super().__init__(**params)
        name, kw = self.params["res_student"], self.params["res_student_kwargs"]
        if name is not None:
            if not isinstance(name, str):
                raise ConfigError(f"scheme 'reskd': res_student must be a model name or null, got {name!r}")
            models.MODELS.canonical(name, where="scheme.params.res_student")
        if not isinstance(kw, dict):
            raise ConfigError(f"scheme 'reskd': res_student_kwargs must be a mapping, got {kw!r}")
        self.res_student: nn.Module | None = None
        self.student: nn.Module | None = None
        self.step_index = 0
        self.switch_step: int | None = None

    def setup(self, *, distiller, recipe, data, device, teacher, trainer, teacher_source=None, **context) -> None:
        if teacher is None:
            raise ConfigError("scheme 'reskd' needs a teacher: the res-student learns the teacher-student gap")
        name, kw = self.params["res_student"], dict(self.params["res_student_kwargs"])
        if name is None:
            if kw:
                raise ConfigError("scheme 'reskd': res_student_kwargs given without res_student")
            name, kw = default_res_student(distiller.student, recipe.student)
        from ..recipe import StudentSpec

        self.res_student = models.from_spec(StudentSpec(name=name, kwargs=kw), data.num_classes,
                                            data.input_shape[0]).to(device)
        head = getattr(self.res_student, "classifier", None)
        if isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)
        self.student = distiller.student
        self._terms = [t for t in distiller.terms if set(t.loss.needs) <= LOGIT_NEEDS and t.weight != 0]
        self._ce_weight = distiller.ce_weight
        if teacher_source is None:
            teacher_source = trainer.source_for(teacher, key=f"teacher-{model_fingerprint(teacher)}")
        self._source = teacher_source
        self.step_index, self.switch_step = 0, None

    def extra_parameters(self) -> list[nn.Parameter]:
        return list(self.res_student.parameters())

    def inference_model(self, model: nn.Module) -> nn.Module:
        if model is not self.student:
            raise ConfigError("scheme 'reskd' cannot add a res-student to a student that a term wraps at inference "
                              "(e.g. simkd)")
        return ResidualStudent(self.student, self.res_student, self.params["confidence"])

    @property
    def student_frozen(self) -> bool:
        return self.switch_step is not None and self.step_index >= self.switch_step

    def on_epoch_start(self, epoch: int, total_epochs: int, steps_per_epoch: int) -> None:
        if self.switch_step is None:
            total = max(1, steps_per_epoch * total_epochs)
            self.switch_step = total - round(self.params["residual_fraction"] * total)
        self._set_modes()

    def _set_modes(self) -> None:
        self.res_student.train()
        if self.student_frozen:
            self.student.eval()

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        z_s = step.student.logits.detach()
        z_r = self.res_student(x)
        combined = Outputs(logits=z_s + z_r)
        t_out = self._source.batch(x, idx).to(x.device)
        loss = self._ce_weight * F.cross_entropy(combined.logits.float(), y)
        for t in self._terms:
            extra: dict[str, Any] = {}
            if "index" in t.loss.needs:
                extra["index"] = idx
            if "input" in t.loss.needs:
                extra["x"] = x
            loss = loss + t.weight * t.loss(combined, t_out, y, **extra)
        return {"reskd": loss + self.params["gap_weight"] * gap_loss(z_r, t_out.logits, z_s)}

    def backward_step(self, losses: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
        if not self.student_frozen:
            super().backward_step(losses, optimizer)
            return
        optimizer.zero_grad(set_to_none=True)
        losses["reskd"].backward()  # S gets no gradient: the optimiser skips its parameters (S frozen)
        optimizer.step()

    def after_step(self) -> None:
        self.step_index += 1
        self._set_modes()
