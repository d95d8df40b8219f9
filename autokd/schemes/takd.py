"""TAKD: distil teacher -> teacher assistant -> student."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..hparams import HParam
from ..outputs import Outputs
from ._helpers import model_fingerprint, recipe_identity, require_logit_terms, trained_helper
from .base import Scheme, register

__all__ = ["TAKD", "default_assistant"]

#: model classes whose width can be interpolated for the default assistant -> their zoo builder
_WIDTH_BUILDERS = {"SmallCNN": "cnn", "VGG": "vgg"}


def default_assistant(teacher: nn.Module, student: nn.Module) -> tuple[str, dict[str, Any]]:
    """The student's architecture at the geometric-mean width of teacher and student (e.g. a ``cnn`` of
    width 8 between a width-32 teacher and a width-2 student). Defined for ``cnn`` and ``vgg`` pairs."""
    builder = _WIDTH_BUILDERS.get(type(student).__name__)
    if builder is None or type(teacher) is not type(student):
        raise ConfigError(
            f"scheme 'takd': no default assistant between a {type(teacher).__name__} teacher and a "
            f"{type(student).__name__} student; set scheme.params.assistant (a model name) and assistant_kwargs"
        )
    w_t, w_s = teacher.width, student.width
    width: Any = math.sqrt(w_t * w_s)
    width = max(1, round(width)) if isinstance(w_s, int) else float(width)
    return builder, {"depth": student.depth, "width": width}


@register
class TAKD(Scheme):
    """Teacher Assistant KD (Mirzadeh et al., AAAI 2020, "Improved Knowledge Distillation via Teacher
    Assistant").

    In ``setup`` an assistant of intermediate size is trained once by standard KD from the teacher
    (``ce_weight`` 0.1 + 0.9 × KD at T=4, default optimiser, seed 0, ``assistant_epochs`` epochs, 0 = the
    student's) and cached under ``cache_dir`` as ``takd-assistant-<hash>.pt``, the hash covering the
    assistant's model and training recipe, the teacher's weights (fingerprint) and the data fingerprint
    (``data.info``); a re-run loads it. The student then distils from the assistant: its outputs replace
    the teacher's for the recipe's terms.

    ``assistant`` / ``assistant_kwargs``: a zoo model; default (``assistant: null``) the student's family at
    the geometric-mean width (see :func:`default_assistant`). The recipe's terms were built against the
    teacher's shapes, so only logit-level terms are allowed (a ConfigError names any other).
    """

    name = "takd"
    paper = "Mirzadeh et al., AAAI 2020, Improved Knowledge Distillation via Teacher Assistant"
    hparams = {
        "assistant": HParam(None, kind="categorical", doc="zoo model name of the assistant; null = default"),
        "assistant_kwargs": HParam({}, kind="categorical", doc="keyword arguments of the assistant's factory"),
        "assistant_epochs": HParam(0, 0, 200, kind="int", doc="epochs to train the assistant; 0 = the student's"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        a, kw, ep = self.params["assistant"], self.params["assistant_kwargs"], self.params["assistant_epochs"]
        if a is not None and not isinstance(a, str):
            raise ConfigError(f"scheme 'takd': assistant must be a model name or null, got {a!r}")
        if a is not None:
            from .. import models

            models.MODELS.canonical(a, where="scheme.params.assistant")
        if not isinstance(kw, dict):
            raise ConfigError(f"scheme 'takd': assistant_kwargs must be a mapping, got {kw!r}")
        if ep < 0:
            raise ConfigError(f"scheme 'takd': assistant_epochs must be >= 0, got {ep}")
        self.assistant: nn.Module | None = None
        self.events: list[str] = []
        self._source = None

    def assistant_recipe(self, teacher: nn.Module, student: nn.Module, epochs: int):
        """The assistant's own training recipe: standard KD from the teacher (independent of the student's
        recipe, so one assistant serves every trial of a study)."""
        from ..recipe import OptimSpec, Recipe, StudentSpec, TermSpec

        name, kwargs = self.params["assistant"], dict(self.params["assistant_kwargs"])
        if name is None:
            if kwargs:
                raise ConfigError("scheme 'takd': assistant_kwargs given without assistant")
            name, kwargs = default_assistant(teacher, student)
        return Recipe(student=StudentSpec(name=name, kwargs=kwargs), ce_weight=0.1,
                      terms=[TermSpec(loss="kd", weight=0.9, params={"temperature": 4.0})],
                      optim=OptimSpec(epochs=epochs), seed=0)

    def setup(self, *, distiller, recipe, data, epochs, teacher, trainer, teacher_source=None, **context) -> None:
        require_logit_terms(self.name, distiller, "the teacher assistant")
        a_epochs = self.params["assistant_epochs"] or epochs
        a_recipe = self.assistant_recipe(teacher, distiller.student, a_epochs)
        key_obj = {"assistant": recipe_identity(a_recipe), "epochs": a_epochs,
                   "teacher": model_fingerprint(teacher), "data": data.info}
        self.assistant, key = trained_helper(
            "takd-assistant", a_recipe, key_obj, trainer=trainer, teacher=teacher, teacher_source=teacher_source,
            epochs=a_epochs, events=self.events)
        self._source = trainer.source_for(self.assistant, key=f"takd-assistant-{key}")

    def teacher_outputs(self, x: Tensor, idx: Tensor, default: Callable[[], Outputs | None]) -> Outputs | None:
        return self._source.batch(x, idx)
