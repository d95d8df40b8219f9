"""Training an undistillable ("nasty") model against a normally trained adversarial network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from .base import Scheme, register

__all__ = ["Nasty", "nasty_kl"]


def nasty_kl(logits: Tensor, adversarial_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(f/τ) ‖ softmax(f_adv/τ)) × τ², summed over classes, batch-mean: the official code's
    ``KLDivLoss(log_softmax(f_adv/τ), softmax(f/τ))`` (the nasty model's distribution is the target)."""
    t = float(temperature)
    log_p = F.log_softmax(logits.float() / t, 1)
    log_adv = F.log_softmax(adversarial_logits.float() / t, 1)
    return F.kl_div(log_adv, log_p, reduction="batchmean", log_target=True) * (t * t)


@register
class Nasty(Scheme):
    """Nasty teacher (Ma et al., ICLR 2021, "Undistillable: Making A Nasty Teacher That CANNOT Teach
    Students").

    Trains the fitted model to stay accurate while its softened outputs mislead a student: the loss is
    ``CE(f, y) − ω τ² KL(softmax(f/τ) ‖ softmax(f_adv/τ))`` (batch-mean KL), ``f_adv`` the trainer's teacher,
    which here is the *adversarial* network: a normally trained model, frozen in eval mode. The negative
    term is logged as ``nasty``. Official code (``train_nasty.py``) conventions, which we follow: the KL's
    target is the nasty model's own distribution (the paper writes the KL the other way round); CIFAR-10
    uses τ = 4, ω = 0.04, CIFAR-100 τ = 20, ω = 0.005; the constant the official code adds to keep the printed
    loss positive is left out. Used by the study's ``teacher.nasty`` option to train a nasty teacher, not by
    student recipes.
    """

    name = "nasty"
    paper = "Ma et al., ICLR 2021, Undistillable: Making A Nasty Teacher That CANNOT Teach Students"
    hparams = {
        "omega": HParam(0.04, 0.001, 0.1, log=True, doc="weight ω of the adversarial KL (subtracted)"),
        "temperature": HParam(4.0, 1.0, 20.0, log=True, doc="softmax temperature τ of the adversarial KL"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.adversarial: nn.Module | None = None

    def setup(self, *, teacher=None, **context) -> None:
        if teacher is None:
            raise ConfigError("scheme 'nasty' needs the adversarial network as the trainer's teacher "
                              "(use the study's teacher.nasty option)")
        self.adversarial = teacher

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        self.adversarial.eval()
        with torch.no_grad():
            adv = self.adversarial(x)
        kl = nasty_kl(step.student.logits, adv, self.params["temperature"])
        return {"nasty": -self.params["omega"] * kl}
