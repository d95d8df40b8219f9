"""Check a :class:`~autokd.recipe.Recipe` against the registries before anything trains."""

from __future__ import annotations

import inspect

from .. import losses, models, schemes
from ..errors import ConfigError, UnknownNameError
from ..recipe import Recipe

__all__ = ["check_recipe", "check_student"]


def check_student(name: str, kwargs: dict, where: str) -> None:
    """A zoo model name and the keyword arguments its factory takes (``tv/*`` and ``module:callable``
    models are checked when they are built)."""
    if name.startswith("tv/") or ":" in name:
        return
    factory = models.MODELS.get(name, where=f"{where}.name")
    allowed = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")]
    for k in kwargs:
        if k not in allowed:
            raise ConfigError(f"{where}.kwargs.{k}: model {name!r} has no parameter {k!r}; "
                              f"allowed: {', '.join(allowed) or 'none'}")


def check_recipe(recipe: Recipe, source: str | None = None) -> Recipe:
    """A copy of ``recipe`` whose component names are known and whose hyper-parameters are valid, with every
    default filled in; a one-line :class:`ConfigError` (prefixed with ``source``) otherwise."""
    prefix = f"{source}: " if source else ""
    try:
        check_student(recipe.student.name, recipe.student.kwargs, "student")
        out = recipe.model_copy(deep=True)
        init_params, _ = models.check_student_options(out.student)  # student.init / student.quantize
        if init_params is not None:
            out.student.init.params = init_params
        for i, term in enumerate(out.terms):
            cls = losses.LOSSES.get(term.loss, where=f"terms[{i}].loss")
            term.params = cls.resolve_hparams(term.params)
            if term.pairs is not None and not ({"feats", "preacts"} & set(cls.needs)):
                raise ConfigError(f"terms[{i}].pairs: loss {term.loss!r} works on logits/embeddings and takes "
                                  "no layer pairs")
        out.scheme.params = schemes.create(out.scheme.name, **out.scheme.params).params
    except (ConfigError, UnknownNameError) as e:
        raise ConfigError(f"{prefix}{e}") from None
    return out
