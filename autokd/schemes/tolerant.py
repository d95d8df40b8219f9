"""Training in generations from a more tolerant patriarch (Yang et al., AAAI 2019)."""

from __future__ import annotations

from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from .ban import BAN
from .base import register

__all__ = ["TolerantGenerations", "top_score_difference"]


def top_score_difference(logits: Tensor, k: int) -> Tensor:
    """The top score difference: the primary (largest) score minus the mean of the next ``k − 1`` largest, batch
    mean. On log-probabilities it is the same number (``ln p_a − ln p_b = z_a − z_b``)."""
    top = logits.float().topk(k, dim=1).values
    return (top[:, 0] - top[:, 1:].mean(1)).mean()


@register
class TolerantGenerations(BAN):
    """Training deep networks in generations with a more tolerant teacher (Yang, Xie, Qiao & Yuille, AAAI 2019,
    "Training Deep Neural Networks in Generations: A More Tolerant Teacher Educates Better Students").

    Generation 0, the patriarch, is the student's architecture trained from scratch (no teacher) with
    ``η·CE + (1 − η)·TSD``, TSD the gap between the largest score and the mean of the next ``top_k − 1`` largest
    (:func:`top_score_difference`): minimising it keeps a few secondary classes alive, so the patriarch teaches
    with a milder, less peaked distribution. Each later generation distils from the previous one with the
    recipe's own loss (its CE and logit-level terms, e.g. KD) and becomes the next teacher; the trainer's fit is
    generation ``generations − 1``. Generations 0..G−2 are trained in ``setup`` and cached exactly as BAN's
    (``tolerant_generations-gen<k>-<hash>.pt``); the patriarch's recipe is the recipe with ``ce_weight = η``, no
    terms and this scheme at ``generations: 1``, seed + 1. ``generations: 1`` trains the recipe's student
    itself as a tolerant patriarch: the recipe's loss (its ``ce_weight`` is the paper's η) + ``(1 − η)·TSD``,
    logged ``tolerant``. Defaults η = 0.6, top_k = 5 (the paper's CIFAR-100 setting; top_k ≤ classes).
    The real teacher is not used for generations ≥ 2 (the first teacher is the patriarch); only logit-level
    terms are allowed there, as in BAN.
    """

    name = "tolerant_generations"
    paper = ("Yang, Xie, Qiao & Yuille, AAAI 2019, Training Deep Neural Networks in Generations: A More Tolerant "
             "Teacher Educates Better Students")
    hparams = {
        "generations": HParam(2, 1, 5, kind="int", doc="number of generations, the patriarch and the trained "
                                                        "student included"),
        "eta": HParam(0.6, 0.3, 1.0, valid="(0, 1]", doc="the patriarch's CE weight; (1 - eta) on the TSD"),
        "top_k": HParam(5, 2, 10, kind="int", valid=">= 2", doc="classes in the top score difference"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.patriarch_mode = self.params["generations"] == 1

    def setup(self, *, data, **context) -> None:
        if self.params["top_k"] > data.num_classes:
            raise ConfigError(f"scheme {self.name!r}: top_k must be <= the number of classes ({data.num_classes}), "
                              f"got {self.params['top_k']}")
        if not self.patriarch_mode:
            super().setup(data=data, **context)

    def generation_recipe(self, recipe, k: int):
        if k > 0:
            return super().generation_recipe(recipe, k)
        from ..recipe import SchemeSpec

        p = self.params
        patriarch = recipe.model_copy(deep=True)
        patriarch.ce_weight, patriarch.terms = p["eta"], []
        patriarch.scheme = SchemeSpec(name=self.name, params={"generations": 1, "eta": p["eta"], "top_k": p["top_k"]})
        patriarch.seed = recipe.seed + 1
        return patriarch

    def first_teacher(self, teacher: nn.Module, teacher_source):
        return None, None

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        if not self.patriarch_mode:
            return {}
        tsd = top_score_difference(step.student.logits, self.params["top_k"])
        return {"tolerant": (1.0 - self.params["eta"]) * tsd}
