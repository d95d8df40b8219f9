"""What a recipe's ``student`` asks beyond its architecture: how its weights start (``init``) and whether it is
fake-quantized (``quantize``). :func:`prepare_student` applies both to a freshly built model — the one place
the trainer does it — and :func:`check_student_options` validates them against the declarations below.

- ``init: net2net`` (params ``noise``) — Chen et al. ICLR 2016: the student starts computing the teacher's
  function (:mod:`autokd.models.net2net`); needs a teacher of the student's family.
- ``quantize: {bits: b}`` — a quantization-aware student with b-bit weights and layer inputs
  (:mod:`autokd.models.quantize`), e.g. for Quantization Mimic (Wei et al. ECCV 2018).

Order: the initialisation first (on the float model), then the quantizers, calibrated on ``calib`` when given.
In your own loop: ``student = prepare_student(models.from_spec(recipe.student, k, c), recipe.student,
teacher=teacher, calib=x_train_batch)`` before ``Distiller(teacher, student, recipe)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError, UnknownNameError
from ..hparams import HParam, resolve
from ..registry import Registry
from .base import MODELS
from .net2net import NET2NET_FAMILIES, NET2NET_HPARAMS, net2net
from .quantize import QUANTIZE_HPARAMS, calibrate, fake_quantize

__all__ = ["STUDENT_INITS", "prepare_student", "check_student_options", "needs_calibration"]

#: ``init`` names -> ``fn(student, teacher, *, calib, **params)``; metadata ``hparams`` (declared parameters),
#: ``families`` (model families it applies to, or None for any), ``paper``
STUDENT_INITS: Registry[Callable[..., nn.Module]] = Registry("student init")
STUDENT_INITS.add("net2net", net2net, hparams=NET2NET_HPARAMS, families=NET2NET_FAMILIES,
                  paper="Chen, Goodfellow & Shlens ICLR 2016, Net2Net (arXiv:1511.05641)")


def _declared(name: str) -> dict[str, HParam]:
    return STUDENT_INITS.meta(name)["hparams"]


def check_student_options(spec: Any, where: str = "student") -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(init params, quantize params)`` of a recipe's student with every default filled in (``None`` where
    the option is absent); a one-line :class:`ConfigError` for an unknown initialiser, a bad value or a student
    family the initialiser cannot grow."""
    init, quant = getattr(spec, "init", None), getattr(spec, "quantize", None)
    init_params = quant_params = None
    if init is not None:
        try:
            meta = STUDENT_INITS.meta(STUDENT_INITS.canonical(init.name, where=f"{where}.init.name"))
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
        init_params = resolve(_declared(init.name), init.params, f"{where}.init {init.name!r}")
        families = meta.get("families")
        family = MODELS.meta(spec.name).get("family") if spec.name in MODELS else None
        if families is not None and family not in families:
            raise ConfigError(f"{where}.init: {init.name} works for the model families {', '.join(families)}; "
                              f"student {spec.name!r} is {'family ' + repr(family) if family else 'not a zoo model'}")
    if quant is not None:
        quant_params = resolve(QUANTIZE_HPARAMS, quant.model_dump(), f"{where}.quantize")
    return init_params, quant_params


def needs_calibration(spec: Any) -> bool:
    """Whether :func:`prepare_student` uses a batch of training inputs for this student (inserted layers'
    statistics, quantizer ranges)."""
    return getattr(spec, "init", None) is not None or getattr(spec, "quantize", None) is not None


def prepare_student(model: nn.Module, spec: Any, *, teacher: nn.Module | None = None,
                    calib: Tensor | None = None) -> nn.Module:
    """Apply ``spec.init`` and ``spec.quantize`` (a recipe's :class:`~autokd.recipe.StudentSpec`) to ``model``,
    built from ``spec`` by :func:`autokd.models.from_spec`; returns the model (changed in place). ``teacher``
    is needed by initialisers that copy it; ``calib`` is a batch of training inputs."""
    init_params, quant_params = check_student_options(spec)
    if init_params is not None:
        if teacher is None:
            raise ConfigError(f"student.init: {spec.init.name} copies the teacher, but there is no teacher")
        model = STUDENT_INITS.get(spec.init.name)(model, teacher, calib=calib, **init_params)
    if quant_params is not None:
        model = fake_quantize(model, quant_params["bits"])
        if calib is not None:
            calibrate(model, calib.to(next(model.parameters()).device))
    return model
