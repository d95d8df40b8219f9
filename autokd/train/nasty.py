"""The nasty-teacher option of a study's teacher (Ma et al., ICLR 2021): an adversarial network trained
normally first, then the teacher trained against it with the ``nasty`` scheme."""

from __future__ import annotations

from typing import Any

from ..recipe import Recipe, SchemeSpec, StudentSpec
from .trainer import Trainer

__all__ = ["nasty_trainer"]


def nasty_trainer(spec, recipe: Recipe, data, device, log=print, on_epoch=None) -> tuple[Trainer, Recipe, dict[str, Any]]:
    """Train the adversarial network of ``spec.nasty`` (cross-entropy only, the teacher's optimiser settings,
    seed ``spec.seed + 1``; default architecture: the teacher's own, as in the paper's main experiments) and
    return ``(trainer, nasty_recipe, info)``: a trainer whose (frozen) teacher is that network, the teacher's
    ``recipe`` with the ``nasty`` scheme (ω, τ of ``spec.nasty``), and what to record in the teacher's metrics."""
    nasty = spec.nasty
    adv = nasty.adversarial
    name, kwargs = (adv.name, dict(adv.kwargs)) if adv.name else (spec.name, dict(spec.kwargs))
    adv_recipe = recipe.model_copy(deep=True)
    adv_recipe.student = StudentSpec(name=name, kwargs=kwargs)
    adv_recipe.optim.epochs = adv.epochs or spec.epochs
    adv_recipe.seed = spec.seed + 1
    log(f"teacher.nasty: training the adversarial network {adv_recipe.student.label()} for "
        f"{adv_recipe.optim.epochs} epochs")
    fit = Trainer(data, device=device, on_epoch=on_epoch).fit(adv_recipe, measure=False)
    adversarial = fit.student
    adversarial.arch_name = name
    nasty_recipe = recipe.model_copy(deep=True)
    nasty_recipe.scheme = SchemeSpec(name="nasty", params={"omega": nasty.omega, "temperature": nasty.temperature})
    info = {"nasty": {"omega": nasty.omega, "temperature": nasty.temperature,
                      "adversarial": {"name": name, "kwargs": kwargs, "epochs": adv_recipe.optim.epochs,
                                      "val_acc": fit.metrics["val_acc"]}}}
    log(f"teacher.nasty: adversarial val acc {fit.metrics['val_acc']:.4f}; training the nasty teacher "
        f"(omega {nasty.omega}, temperature {nasty.temperature})")
    return Trainer(data, teacher=adversarial, device=device, on_epoch=on_epoch), nasty_recipe, info
