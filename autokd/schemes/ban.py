"""Born-Again Networks: generations of the student, each distilled from the previous one."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..errors import ConfigError
from ..fingerprint import config_hash
from ..hparams import HParam
from ..outputs import Outputs
from ._helpers import MeanLogits, model_fingerprint, recipe_identity, require_logit_terms, trained_helper
from .base import Scheme, register

__all__ = ["BAN"]


@register
class BAN(Scheme):
    """Born-Again Networks (Furlanello et al., ICML 2018).

    ``generations`` = G students of the recipe's own architecture are trained in sequence: generation 0
    distils from the real teacher, generation k from generation k−1 — or, with ``ensemble: true``, from the
    mean of the logits of generations 0..k−1. Generations 0..G−2 are trained in ``setup`` with the recipe
    itself (scheme ``standard``, seed ``recipe.seed + k + 1``) and cached under ``cache_dir`` as
    ``ban-gen<k>-<hash>.pt``, the hash covering the recipe, the epochs, the previous generations' hashes,
    the teacher's weights (fingerprint) and the data fingerprint; a re-run loads them. The trainer's fit is
    generation G−1, whose teacher outputs come from generation G−2 (or the ensemble). ``generations: 1`` is
    plain KD from the teacher. Only logit-level terms are allowed (the generations replace the teacher, and
    connectors were built against the teacher's shapes).
    """

    name = "ban"
    paper = "Furlanello et al., ICML 2018, Born-Again Neural Networks"
    hparams = {
        "generations": HParam(2, 1, 5, kind="int", doc="number of generations, the trained student included"),
        "ensemble": HParam(False, kind="bool", doc="teach with the mean logits of all previous generations"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params["generations"] < 1:
            raise ConfigError(f"scheme 'ban': generations must be >= 1, got {self.params['generations']}")
        self.generations: list[nn.Module] = []
        self.events: list[str] = []
        self._source = None

    def generation_recipe(self, recipe, k: int):
        """Generation k's training recipe: the recipe itself under scheme ``standard``, seed ``seed + k + 1``."""
        from ..recipe import SchemeSpec

        gen_recipe = recipe.model_copy(deep=True)
        gen_recipe.scheme = SchemeSpec()
        gen_recipe.seed = recipe.seed + k + 1
        return gen_recipe

    def first_teacher(self, teacher: nn.Module, teacher_source) -> tuple[nn.Module | None, object]:
        """Generation 0's teacher and its output source: the real teacher."""
        return teacher, teacher_source

    def setup(self, *, distiller, recipe, data, epochs, teacher, trainer, teacher_source=None, **context) -> None:
        require_logit_terms(self.name, distiller, "a previous generation")
        ensemble = self.params.get("ensemble", False)
        base = {"teacher": model_fingerprint(teacher) if teacher is not None else None, "data": data.info,
                "epochs": epochs}
        keys: list[str] = []
        self.generations = []
        for k in range(self.params["generations"] - 1):
            gen_recipe = self.generation_recipe(recipe, k)
            if k == 0:
                t, source = self.first_teacher(teacher, teacher_source)
            else:
                t, source = self._teacher_of(ensemble), None
            key_obj = {**base, "recipe": recipe_identity(gen_recipe), "generation": k, "previous": keys,
                       "ensemble": ensemble and k >= 2}
            model, key = trained_helper(f"{self.name}-gen{k}", gen_recipe, key_obj, trainer=trainer, teacher=t,
                                        teacher_source=source, epochs=epochs, events=self.events)
            self.generations.append(model)
            keys.append(key)
        if self.generations:
            key = config_hash({"generations": keys, "ensemble": ensemble})
            self._source = trainer.source_for(self._teacher_of(ensemble), key=f"{self.name}-{key}")

    def _teacher_of(self, ensemble: bool) -> nn.Module:
        if ensemble and len(self.generations) > 1:
            return MeanLogits(self.generations).eval()
        return self.generations[-1]

    def teacher_outputs(self, x: Tensor, idx: Tensor, default: Callable[[], Outputs | None]) -> Outputs | None:
        return default() if self._source is None else self._source.batch(x, idx)
