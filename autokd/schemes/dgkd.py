"""DGKD: densely guided KD — the teacher and every larger teacher assistant teach each smaller model."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..distiller import Step
from ..errors import ConfigError
from ..hparams import HParam
from ..outputs import Outputs
from ._helpers import LOGIT_NEEDS, model_fingerprint, recipe_identity, trained_helper
from .base import Scheme, register
from .takd import _WIDTH_BUILDERS

__all__ = ["DGKD", "interpolated_assistants", "drop_guides"]


def interpolated_assistants(teacher: nn.Module, student: nn.Module, n: int) -> list[dict[str, Any]]:
    """``n`` assistants of the student's family (``cnn`` / ``vgg``) whose widths fall geometrically between the
    teacher's and the student's, largest first: width_k = w_t · (w_s / w_t)^(k / (n + 1)), rounded; widths equal
    to a neighbour's are dropped (e.g. 15 and 7 between a width-32 teacher and a width-3 student)."""
    builder = _WIDTH_BUILDERS.get(type(student).__name__)
    if builder is None or type(teacher) is not type(student):
        raise ConfigError(
            f"scheme 'dgkd': no default assistants between a {type(teacher).__name__} teacher and a "
            f"{type(student).__name__} student; set scheme.params.assistant_specs (a list of {{name, kwargs}})")
    w_t, w_s = teacher.width, student.width
    out, widths = [], [w_t]
    for k in range(1, n + 1):
        w: Any = w_t * (w_s / w_t) ** (k / (n + 1))
        w = max(1, round(w)) if isinstance(w_s, int) else float(w)
        if w != widths[-1] and w != w_s and (w - w_s) * (w_t - w_s) > 0:
            widths.append(w)
            out.append({"name": builder, "kwargs": {"depth": student.depth, "width": w}})
    if not out:
        raise ConfigError(f"scheme 'dgkd': no assistant width fits between the teacher's ({w_t}) and the "
                          f"student's ({w_s}); set scheme.params.assistant_specs")
    return out


def drop_guides(n_guides: int, drop: int, generator: torch.Generator) -> list[int]:
    """DGKD's stochastic teaching: the indices of the guides kept this step — ``drop`` of the ``n_guides`` (at
    most ``n_guides − 1``: one always teaches) removed uniformly at random, as the official code's repeated
    ``random.choice``."""
    drop = min(drop, n_guides - 1)
    order = torch.randperm(n_guides, generator=generator).tolist()
    return sorted(order[drop:])


@register
class DGKD(Scheme):
    """Densely Guided KD using multiple teacher assistants (Son, Na, Choi & Hwang, ICCV 2021).

    Assistants A_1 > … > A_n (``assistant_specs``: zoo models, largest first; default ``assistants`` of them at
    geometrically interpolated widths, :func:`interpolated_assistants`) are trained once and cached like TAKD's
    assistant (``dgkd-assistant-<hash>.pt``): A_k by this very scheme with guides {teacher, A_1..A_{k−1}}
    (``ce_weight`` 0.1 + 0.9 × KD at T = 4, seed 0, ``assistant_epochs`` epochs; 0 = the student's). The
    student then learns from every guide {teacher, A_1..A_n}: each of the recipe's terms is applied against each
    guide, ``Σ_g Σ_terms weight · term(student, g)`` (logged ``dgkd``; the terms themselves are switched off in
    the distiller through ``term_scales``, so the teacher is run — or read from its cache — only here).
    Stochastic DGKD: every step ``drop`` guides, chosen uniformly at random, teach nothing (the official code's
    ``--drop-num``; at least one guide is always kept), drawn from a generator seeded with the recipe's seed.
    Terms that need the teacher's stage features act with the teacher guide only (their connectors were built
    against the teacher's shapes); logit-level terms act with every guide, so at least one is needed.

    The official loss is ``(1−λ)·CE + λ·T²·Σ_g KL`` with ``nn.KLDivLoss()``'s element mean (÷ N·K); here each
    guide's term is the recipe's (``kd``: batch-mean × T²), so the KD scale differs by the class count K.
    """

    name = "dgkd"
    paper = "Son, Na, Choi & Hwang, ICCV 2021, Densely Guided Knowledge Distillation using Multiple Teacher Assistants"
    hparams = {
        "assistants": HParam(2, 1, 3, kind="int", doc="number of default assistants (ignored with assistant_specs)"),
        "assistant_specs": HParam(None, kind="categorical", doc="assistants as [{name, kwargs}], largest first"),
        "assistant_epochs": HParam(0, 0, 200, kind="int", doc="epochs to train each assistant; 0 = the student's"),
        "drop": HParam(1, 0, 2, kind="int", doc="guides dropped at random each step (stochastic DGKD)"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        specs = self.params["assistant_specs"]
        if specs is not None:
            from .. import models

            ok = isinstance(specs, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                                 and set(s) <= {"name", "kwargs"} for s in specs)
            if not ok:
                raise ConfigError(f"scheme 'dgkd': assistant_specs must be a list of {{name, kwargs}}, got {specs!r}")
            for s in specs:
                models.MODELS.canonical(s["name"], where="scheme.params.assistant_specs")
        if self.params["assistants"] < 1:
            raise ConfigError(f"scheme 'dgkd': assistants must be >= 1, got {self.params['assistants']}")
        self.assistants: list[nn.Module] = []
        self.events: list[str] = []
        self.kept: list[int] = []  # the guides kept at the last step (0 = the teacher)
        self._sources: list = []
        self._terms: list = []
        self._needs_feats = False
        self._generator = torch.Generator()

    def assistant_recipe(self, specs: list[dict[str, Any]], k: int, epochs: int):
        """A_k's own training recipe: KD (0.1 CE + 0.9 KD, T = 4) under DGKD with guides teacher + A_1..A_{k−1}."""
        from ..recipe import OptimSpec, Recipe, SchemeSpec, StudentSpec, TermSpec

        params = {"assistant_specs": [dict(s) for s in specs[:k]], "assistant_epochs": epochs,
                  "drop": self.params["drop"]}
        return Recipe(student=StudentSpec(name=specs[k]["name"], kwargs=dict(specs[k].get("kwargs", {}))),
                      ce_weight=0.1, terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                      scheme=SchemeSpec(name=self.name, params=params), optim=OptimSpec(epochs=epochs), seed=0)

    def setup(self, *, distiller, recipe, data, epochs, teacher, trainer, teacher_source=None, **context) -> None:
        if teacher is None:
            raise ConfigError("scheme 'dgkd' needs a teacher")
        self._terms = [t for t in distiller.terms if t.weight != 0]
        if not any(set(t.loss.needs) <= LOGIT_NEEDS for t in self._terms):
            raise ConfigError("scheme 'dgkd' needs at least one logit-level distillation term (e.g. kd): the "
                              "assistants teach through them")
        specs = self.params["assistant_specs"]
        if specs is None:
            specs = interpolated_assistants(teacher, distiller.student, self.params["assistants"])
        a_epochs = self.params["assistant_epochs"] or epochs
        self.assistants = []
        if teacher_source is None:
            teacher_source = trainer.source_for(teacher, key=f"teacher-{model_fingerprint(teacher)}")
        self._sources = [teacher_source]
        for k in range(len(specs)):
            a_recipe = self.assistant_recipe(specs, k, a_epochs)
            key_obj = {"assistant": recipe_identity(a_recipe), "epochs": a_epochs,
                       "teacher": model_fingerprint(teacher), "data": data.info}
            model, key = trained_helper("dgkd-assistant", a_recipe, key_obj, trainer=trainer, teacher=teacher,
                                        teacher_source=teacher_source, epochs=a_epochs, events=self.events)
            self.assistants.append(model)
            self._sources.append(trainer.source_for(model, key=f"dgkd-assistant-{key}"))
        self._needs_feats = distiller.needs_feats
        self._generator = torch.Generator().manual_seed(int(recipe.seed))

    def term_scales(self, epoch: int, total_epochs: int, keys: list[str]) -> dict[str, float]:
        return {k: 0.0 for k in keys}  # the terms are applied per guide in extra_losses

    def guide_outputs(self, g: int, x: Tensor, idx: Tensor) -> Outputs:
        feats = g == 0 and self._needs_feats
        return self._sources[g].batch(x, idx, needs_feats=feats).to(x.device)

    def extra_losses(self, x: Tensor, y: Tensor, idx: Tensor, step: Step) -> dict[str, Tensor]:
        self.kept = drop_guides(len(self._sources), self.params["drop"], self._generator)
        total = torch.zeros((), device=step.student.logits.device)
        for g in self.kept:
            out = self.guide_outputs(g, x, idx)
            for t in self._terms:
                if g > 0 and not set(t.loss.needs) <= LOGIT_NEEDS:
                    continue
                extra: dict[str, Any] = {}
                if "index" in t.loss.needs:
                    extra["index"] = idx
                if "input" in t.loss.needs:
                    extra["x"] = x
                total = total + t.weight * t.loss(step.student, out, y, **extra)
        return {"dgkd": total}
