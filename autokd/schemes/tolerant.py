"""Training in generations from a more tolerant patriarch (Yang et al., AAAI 2019)."""

from __future__ import annotations

from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..fingerprint import config_hash
from ..hparams import HParam
from ._helpers import recipe_identity, soft_kl, trained_helper
from .base import Scheme, register

__all__ = ["TolerantGenerations", "top_score_difference", "generation_kl"]


def top_score_difference(logits: Tensor, k: int) -> Tensor:
    """The top score difference (TSD): the largest score minus the mean of the next ``k − 1`` largest, batch
    mean. On log-probabilities it is the same number (``ln p_a − ln p_b = z_a − z_b``)."""
    top = logits.float().topk(k, dim=1).values
    return (top[:, 0] - top[:, 1:].mean(1)).mean()


def generation_kl(student_logits: Tensor, previous_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """What a generation learns from the previous one: KL(softmax(prev/T) ‖ softmax(student/T)), summed over
    classes, batch-mean, × T² (at the paper's T = 1, the plain softmax KL; the ``kd`` loss at the same T)."""
    return soft_kl(student_logits, previous_logits.detach(), temperature)


@register
class TolerantGenerations(Scheme):
    """Training deep networks in generations with a more tolerant teacher (Yang, Xie, Qiao & Yuille, AAAI 2019,
    "Training Deep Neural Networks in Generations: A More Tolerant Teacher Educates Better Students";
    arXiv:1805.05551 "Knowledge Distillation in Generations: More Tolerant Teachers Educate Better Students").

    No external teacher: generation 0, the *patriarch*, is the student's architecture trained from scratch with
    ``η·CE + (1 − η)·TSD``, where TSD (:func:`top_score_difference`, on logits — equivalently on
    log-probabilities) is the gap between the largest score and the mean of the next ``top_k − 1``: only the
    patriarch carries this extra term, which keeps a few secondary classes alive, so it teaches with a milder,
    less peaked distribution (and is itself less accurate). Every later generation is a student of the same
    architecture that learns from its predecessor and becomes the next teacher; the paper's student loss is
    ``λ·CE + (1 − λ)·KL(p_prev ‖ p_student)`` on the plain softmax (no temperature; the authors' later Snapshot
    Distillation adds the temperature as its own change). Here a student generation minimises the recipe's
    ``ce_weight`` × CE + ``weight`` × :func:`generation_kl` at ``temperature`` (default 1): the paper's loss is
    ``ce_weight: λ``, no terms, ``weight: 1 − λ``. The recipe's own terms, if any, still distil from the study's
    teacher in the trainer's fit (as with the other teacher-free schemes), on top of the generation loss.

    ``generations`` = G counts the patriarch: generations 0..G−2 are trained in ``setup`` (patriarch: the
    recipe with ``ce_weight = η``, no terms, this scheme at ``generations: 1``, seed + 1; student generation k:
    the recipe's CE weight and ``kd`` at ``temperature`` with weight ``weight`` from generation k−1, scheme
    ``standard``, seed + k + 1 — the recipe's terms are not used there) and cached under ``cache_dir`` as
    ``tolerant_generations-gen<k>-<hash>.pt`` (the hash covers the generation's recipe, the epochs, the data and
    the previous generations); the trainer's fit is generation G−1. ``generations: 1`` trains the recipe's
    student itself as a tolerant patriarch: the recipe's loss (its ``ce_weight`` is the paper's η) +
    ``(1 − η)·TSD``, logged ``tsd``; the generation loss is logged ``generation``.

    No official code is published (the authors' publication page lists none), so this follows the paper.
    Defaults η = 0.6, top_k = 5 (the paper's CIFAR-100 setting; top_k ≤ classes), T = 1, weight 0.5 (λ = 0.5).
    The primary class is the highest-scored one (the v1 abstract calls it the ground truth, which it is on a
    fitted training sample).
    """

    name = "tolerant_generations"
    paper = ("Yang, Xie, Qiao & Yuille, AAAI 2019, Training Deep Neural Networks in Generations: A More Tolerant "
             "Teacher Educates Better Students (arXiv:1805.05551)")
    hparams = {
        "generations": HParam(2, 1, 5, kind="int", valid=">= 1",
                              doc="number of generations, the patriarch and the trained student included"),
        "eta": HParam(0.6, 0.3, 1.0, valid="(0, 1]", doc="the patriarch's CE weight; (1 - eta) on the TSD"),
        "top_k": HParam(5, 2, 10, kind="int", valid=">= 2", doc="classes in the top score difference"),
        "weight": HParam(0.5, 0.1, 2.0, log=True, valid=">= 0",
                         doc="weight of a student generation's KL to the previous generation (the paper's 1 - λ)"),
        "temperature": HParam(1.0, 1.0, 4.0, valid="> 0",
                              doc="softmax temperature of the generation KL (the paper: 1, the plain softmax)"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.patriarch_mode = self.params["generations"] == 1
        self.generations: list[nn.Module] = []
        self.events: list[str] = []
        self._source = None

    def patriarch_recipe(self, recipe):
        """Generation 0's recipe: the student from scratch with ``η·CE`` (+ the TSD this scheme adds), seed + 1."""
        from ..recipe import SchemeSpec

        p = self.params
        patriarch = recipe.model_copy(deep=True)
        patriarch.ce_weight, patriarch.terms = p["eta"], []
        patriarch.scheme = SchemeSpec(name=self.name, params={"generations": 1, "eta": p["eta"], "top_k": p["top_k"]})
        patriarch.seed = recipe.seed + 1
        return patriarch

    def student_recipe(self, recipe, k: int):
        """Student generation k's recipe (k ≥ 1): the recipe's CE weight + ``weight`` × ``kd`` at ``temperature``
        from generation k−1, no other term, scheme ``standard``, seed + k + 1."""
        from ..recipe import SchemeSpec, TermSpec

        gen = recipe.model_copy(deep=True)
        gen.terms = [TermSpec(loss="kd", weight=self.params["weight"],
                              params={"temperature": self.params["temperature"]})]
        gen.scheme = SchemeSpec()
        gen.seed = recipe.seed + k + 1
        return gen

    def setup(self, *, data, recipe, epochs, trainer, **context) -> None:
        if self.params["top_k"] > data.num_classes:
            raise ConfigError(f"scheme {self.name!r}: top_k must be <= the number of classes ({data.num_classes}), "
                              f"got {self.params['top_k']}")
        if self.patriarch_mode:
            return
        keys: list[str] = []
        self.generations = []
        for k in range(self.params["generations"] - 1):
            gen_recipe = self.patriarch_recipe(recipe) if k == 0 else self.student_recipe(recipe, k)
            key_obj = {"data": data.info, "epochs": epochs, "recipe": recipe_identity(gen_recipe), "generation": k,
                       "previous": keys}
            model, key = trained_helper(f"{self.name}-gen{k}", gen_recipe, key_obj, trainer=trainer,
                                        teacher=self.generations[-1] if k else None, epochs=epochs,
                                        events=self.events)
            self.generations.append(model)
            keys.append(key)
        self._source = trainer.source_for(self.generations[-1], key=f"{self.name}-{config_hash(keys)}")

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        logits = step.student.logits
        if self.patriarch_mode:
            return {"tsd": (1.0 - self.params["eta"]) * top_score_difference(logits, self.params["top_k"])}
        previous = self._source.batch(x, idx).logits.to(logits.device)
        return {"generation": self.params["weight"] * generation_kl(logits, previous, self.params["temperature"])}
